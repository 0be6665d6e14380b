"""
Training speed of every GPU config on synthetic tokens: nothing to download or prepare, so the first thing
to run on a freshly rented GPU, before paying for a whole run.

    make bench_gpu                                  # every GPU config, compiled, on this machine's GPU
    python -m measure.bench_train configs/modern.py --steps 30
    python -m measure.bench_train --tiny                    # the same code at a tiny shape on the CPU (what the tests run)
    python -m measure.bench_train --smoke                   # every config at its real shape, one step on the CPU

Each config gets the model and optimizer that train.py builds and train.py's own train_step, fed batches of
random token ids. The first --warmup steps are timed apart (torch.compile compiles in the first one); then
--steps steps are timed one by one, the device synchronised after each, and the median is reported:
tokens/s, MFU both ways (nanoGPT's FLOPs, and with causal attention's masked half left out) against the GPU's
peak (by its name: estimate.gpu_peak_flops; or --peak_flops), peak GPU memory (on the CPU: the process's
peak resident memory so far), ms/step, compile seconds (the first step minus a median step), the loss of the
first step (about ln(50257) = 10.8 for an untrained model), and the config's whole token budget projected
at this speed: hours and dollars at its gpu_hourly_cost, on one GPU.
"""

import argparse
import datetime
import os
import sys

from cheapgpt2.common import REPO, describe_machine, write_atomically
from cheapgpt2.config import load_config
from cheapgpt2.throughput import TINY, bench_config, throughput_table

GPU_CONFIGS = [os.path.join(REPO, "configs", f"{name}.py")
               for name in ("baseline", "increase_max_lr", "rotational_pos_emb", "swiglu", "modern", "speedrun")]
# the real 124M shapes and context, one sequence per step, bf16 autocast as on the GPU: catches the shape,
# dtype and memory-layout bugs that tiny test models hide
SMOKE = ["--batch_size=1", "--device=cpu", "--dtype=bfloat16", "--compile=False"]


def smoke_overrides(path):
    """SMOKE for one config: a step of one sequence of the config's own context (1024 tokens, speedrun's 4096)."""
    return SMOKE + [f"--total_batch_size={load_config(path, []).block_size}"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="config files (default: the five GPU configs)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config, median reported (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included (default 3)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--tiny", action="store_true", help="a tiny shape on the CPU: the same code, in seconds")
    shape.add_argument("--smoke", action="store_true", help="the real shapes, one step each on the CPU, bf16 autocast "
                                                            "(a test of shapes and dtypes, not a speed)")
    parser.add_argument("--out", metavar="MD", help="also write the table to this markdown file")
    args, overrides = parser.parse_known_args(argv)
    if args.smoke:
        args.steps, args.warmup = 1, 0
    try:
        if args.steps < 1 or args.warmup < 0:
            raise ValueError("--steps must be at least 1 and --warmup at least 0")
        rows = []
        for path in args.configs or GPU_CONFIGS:
            shape = TINY if args.tiny else smoke_overrides(path) if args.smoke else []
            rows.append(bench_config(path, shape + overrides, args.steps, args.warmup))
            print(f"{rows[-1]['config']}: {rows[-1]['tok_per_s']:,.0f} tokens/s", flush=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shape_note = " at a tiny shape (--tiny)" if args.tiny else " at full shape, one step (--smoke)" if args.smoke else ""
    note = (f"`python -m measure.bench_train{' --tiny' if args.tiny else ' --smoke' if args.smoke else ''}`{shape_note} on "
            f"{describe_machine()}, {datetime.date.today().isoformat()}: synthetic tokens, median of {args.steps} "
            f"step(s) after {args.warmup} warm-up; whole run = the config's max_steps at this speed on one GPU.")
    table = throughput_table(rows, note)
    print(table)
    if args.out:
        write_atomically(args.out, table)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
