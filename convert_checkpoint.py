"""
Convert the sharded (DCP) checkpoint directory of an FSDP run (parallelism = "fsdp") into the single-file
ckpt.pt that sample.py, the evals and the exports read: the weights only, in float32.

    python convert_checkpoint.py out/gpt2_xl/ckpt                     # -> out/gpt2_xl/ckpt.pt
    python convert_checkpoint.py out/gpt2_xl/ckpt --out /tmp/xl.pt
"""

import argparse
import os
import sys

from cheapgpt2.distributed import convert_to_single_file


def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert a sharded (DCP) checkpoint directory of an FSDP run into "
                                                 "the single-file ckpt.pt that sample.py, the evals and export read.")
    parser.add_argument("ckpt_dir", help="the run's out_dir/ckpt directory")
    parser.add_argument("--out", default=None, help="the file to write (default: ckpt.pt beside ckpt_dir)")
    args = parser.parse_args(argv)
    out_path = args.out or os.path.join(os.path.dirname(os.path.abspath(args.ckpt_dir.rstrip("/"))), "ckpt.pt")
    try:
        convert_to_single_file(args.ckpt_dir.rstrip("/"), out_path)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
