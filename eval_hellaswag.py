"""
Zero-shot HellaSwag accuracy (acc and acc_norm) of a checkpoint, or of OpenAI's GPT-2 for the reference number.

    python eval_hellaswag.py out/rope/ckpt.pt
    python eval_hellaswag.py --hf gpt2 --out out/gpt2_hellaswag.json
    python eval_hellaswag.py out/rope/ckpt.pt --data hellaswag_val.jsonl --limit 1000

Matches lm-evaluation-harness's hellaswag task: its cleaning of contexts and endings, each of the four
endings scored by log-likelihood; acc_norm (per character of the ending) is the number usually quoted.
Data: Rowan/hellaswag (validation, 10,042 questions) from Hugging Face, or --data: a .jsonl in that schema
or the original release's (hellaswag_val.jsonl).
"""

import sys

from cheapgpt2.multiple_choice import run_cli

FORMATS = {"hellaswag": "hellaswag"}  # one format; the key names its results in --out


def main(argv=None):
    return run_cli(argv, "hellaswag", FORMATS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
