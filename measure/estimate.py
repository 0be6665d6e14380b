"""
The command line of cheapgpt2/estimate.py: memory per GPU, fit in 80 GB, hours and dollars of a config's whole
run, for DDP and FSDP, without a GPU (train.py CONFIG --dry_run prints one config's report).

    python -m measure.estimate configs/gpt2_xl.py --gpus=1,8
    python -m measure.estimate --markdown configs/baseline.py configs/gpt2_medium.py   # the summary table
    python -m measure.estimate configs/*.py --out media/estimate.md    # the reports, and the table into a file
"""

import argparse
import datetime
import sys

import torch

from cheapgpt2.common import hardware, write_atomically
from cheapgpt2.config import load_config
from cheapgpt2.estimate import DEFAULT_MFU, estimate, format_report


def markdown_row(name, result, gpus):
    """One docs/scaling.md row: the peak per GPU on 1 GPU (ddp) and on `gpus` GPUs (fsdp, with and without activation
    checkpointing), and the run's hours and dollars on `gpus` GPUs."""
    rows = {(r["parallelism"], r["gpus"], r["activation_checkpointing"]): r for r in result["rows"]}
    one, sharded, checkpointed = rows[("ddp", 1, False)], rows[("fsdp", gpus, False)], rows[("fsdp", gpus, True)]
    peak = lambda r: f"{r['memory']['peak'] / 1e9:.0f}" + ("" if r["fits"] else " (no)")  # noqa: E731
    sizes = result["sizes"]
    return (f"| {name} | {sizes['total'] / 1e6:,.0f}M | {sizes['flops_per_token'] / 1e9:.2f} | "
            f"{result['total_tokens'] / 1e9:.1f}B | {result['tokens_per_micro_batch']:,} | {peak(one)} | {peak(sharded)} | "
            f"{peak(checkpointed)} | {sharded['hours']:.1f} | {sharded['dollars']:,.0f} |")


MARKDOWN_HEADER = ("| config | params | GFLOPs/token | tokens | micro-batch tokens/GPU | peak GB/GPU, 1 GPU ddp | "
                   "peak GB/GPU, {n} GPUs fsdp | same + act. ckpt | hours on {n} GPUs | $ on {n} GPUs |\n"
                   "|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Memory per GPU, fit in 80 GB, time and dollars of a config's "
                                                 "whole run, for DDP and FSDP, without a GPU.")
    parser.add_argument("config", nargs="+", help="config files from configs/, e.g. configs/gpt2_xl.py")
    parser.add_argument("--markdown", action="store_true",
                        help="one markdown summary row per config (1 GPU ddp; fsdp on the largest --gpus count)")
    parser.add_argument("--gpus", default="1,8", help="comma-separated GPU counts to tabulate (default 1,8)")
    parser.add_argument("--out", metavar="FILE", help="also write the --markdown table to FILE, headed by the command, "
                        "this machine (the activations are measured on its CPU), torch and the date")
    parser.add_argument("--mfu", type=float, default=None,
                        help=f"assumed model FLOPs utilisation (default: the config's assumed_mfu, else {DEFAULT_MFU})")
    args, overrides = parser.parse_known_args(argv)
    try:
        gpus = [int(g) for g in args.gpus.split(",")]
        if any(g < 1 for g in gpus):
            raise ValueError
    except ValueError:
        print(f"error: --gpus takes positive integers separated by commas, got {args.gpus!r}", file=sys.stderr)
        return 1
    if args.mfu is not None and not 0 < args.mfu <= 1:
        print(f"error: --mfu must be in (0, 1], got {args.mfu}", file=sys.stderr)
        return 1
    try:
        configs = [(path, load_config(path, overrides)) for path in args.config]
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.markdown or args.out:
        gpus = sorted(set(gpus) | {1})  # the table's first peak column is one GPU's
    table = [MARKDOWN_HEADER.format(n=gpus[-1])]
    if args.markdown:
        print(table[0])
    for path, cfg in configs:
        result = estimate(cfg, gpus, args.mfu)  # once per config: the activations are measured, which takes a while
        if args.markdown or args.out:
            table.append(markdown_row(path, result, gpus[-1]))
        print(table[-1] if args.markdown else format_report(path, result) + "\n")
    if args.out:
        command = " ".join(["python -m measure.estimate", *(argv if argv is not None else sys.argv[1:])])
        mfu = f"{args.mfu:.0%} MFU" if args.mfu else "each config's assumed_mfu"
        note = (f"`{command}` on {hardware()}, torch {torch.__version__}, {datetime.date.today().isoformat()}: "
                f"estimates, not measurements, at {mfu}; the activations are measured per token on this CPU, in "
                f"eager PyTorch under bf16 autocast.")
        write_atomically(args.out, note + "\n\n" + "\n".join(table) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
