"""
The variants table of docs/training.md, computed from configs/: what each changes and its parameter count.

    python -m measure.variants                 # every config in configs/
    python -m measure.variants configs/swiglu.py
"""

import argparse
import glob
import sys

import torch

from cheapgpt2.config import load_config
from cheapgpt2.model import GPT


def describe(config_path):
    """One markdown row: config, the first comment line of the file, model choices, max_lr, tokens, parameters."""
    cfg = load_config(config_path)
    with open(config_path) as f:
        what = f.readline().lstrip("# ").strip()
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        params = GPT(cfg.model_config()).num_params()
    model = f"{cfg.n_layer}L {cfg.n_embd}w, {cfg.pos_emb} pos, {cfg.mlp} MLP"
    tokens = cfg.max_steps * cfg.total_batch_size
    tokens_text = f"{tokens / 1e9:.2f}B" if tokens >= 1e8 else f"{tokens / 1e6:.2f}M"
    return f"| `{config_path}` | {what} | {model} | {cfg.max_lr:g} | {tokens_text} | {params:,} |"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print the variants table (markdown) from config files.")
    parser.add_argument("configs", nargs="*", help="config files (default: configs/*.py)")
    args = parser.parse_args(argv)
    print("| config | what it changes | model | max_lr | tokens | parameters |")
    print("|---|---|---|---|---|---|")
    try:
        for path in args.configs or sorted(glob.glob("configs/*.py")):
            print(describe(path))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
