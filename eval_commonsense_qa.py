"""
Zero-shot CommonsenseQA accuracy of a checkpoint, or of OpenAI's GPT-2 for the reference number.

    python eval_commonsense_qa.py out/rope/ckpt.pt
    python eval_commonsense_qa.py --hf gpt2 --out out/gpt2_csqa.json
    python eval_commonsense_qa.py out/rope/ckpt.pt --data ../shared/data/commonsense_qa_validation.jsonl --format cloze --limit 200

Two formats, both scored by log-likelihood as lm-evaluation-harness does (see multiple_choice.py):
  mc     lm-eval's commonsense_qa: the question, options A-E, "Answer:", the letter scored (chance: 20%)
  cloze  "Question: ...\\nAnswer:" and each answer's text scored
Data: tau/commonsense_qa (validation, 1,221 questions) from Hugging Face, or --data: a .jsonl in the
Hugging Face schema or the original release's.
"""

import sys

from multiple_choice import run_cli

FORMATS = {"mc": "commonsense_qa", "cloze": "commonsense_qa_cloze"}  # --format name: task in multiple_choice.TASKS


def main(argv=None):
    return run_cli(argv, "commonsense_qa", FORMATS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
