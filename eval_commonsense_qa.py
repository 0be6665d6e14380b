"""
Zero-shot CommonsenseQA accuracy of a checkpoint, or of OpenAI's GPT-2 for the reference number.

    python eval_commonsense_qa.py out/rope/ckpt.pt
    python eval_commonsense_qa.py --hf gpt2 --out out/gpt2_csqa.json
    python eval_commonsense_qa.py out/rope/ckpt.pt --data ../shared/data/commonsense_qa_validation.jsonl --format plain --limit 200

Three formats, each choice scored by its summed log-likelihood as lm-evaluation-harness does (see multiple_choice.py):
  mc     lm-eval's commonsense_qa: the question, options A-E, "Answer:", the letter scored (chance: 20%)
  cloze  "Question: ...\\nAnswer:" and each answer's text scored
  plain  the bare question, then " " + each answer's text: the original train_gpt project's protocol
         (golark/train_gpt, train_gpt/commonsense.py), under which OpenAI's GPT-2 124M scores 28.26% (345/1221)
Data: tau/commonsense_qa (validation, 1,221 questions) from Hugging Face, or --data: a .jsonl in the
Hugging Face schema or the original release's.
"""

import sys

from cheapgpt2.multiple_choice import CSQA_FORMATS, run_cli


def main(argv=None):
    return run_cli(argv, "commonsense_qa", CSQA_FORMATS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
