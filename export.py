"""
Export a model to the C engine's file (c/FORMAT.md, written by cheapgpt2/engine_file.py), in fp32, bf16, or
quantize.py's q8_0 and q4_0 schemes.

    python export.py out/demo_cpu/ckpt.pt model.bin                  # fp32
    python export.py out/demo_cpu/ckpt.pt model_q8.bin --dtype q8_0  # int8 weights in groups of 64
    python export.py out/demo_cpu/ckpt.pt model_q4.bin --dtype q4_0  # 4-bit weights in groups of 32, the head in q8_0
    python export.py out/demo_cpu/ckpt.pt model_bf16.bin --dtype bf16
    python export.py --hf gpt2 gpt2.bin                              # OpenAI's GPT-2 (a hub id or a transformers directory)
"""

import argparse
import sys

from cheapgpt2.checkpoint import add_model_arguments, load_model, model_arguments_error
from cheapgpt2.engine_file import DTYPES, export


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a checkpoint to the C engine's memory-mappable file (c/FORMAT.md).")
    add_model_arguments(parser, "export")
    parser.add_argument("out", help="the file to write, e.g. model.bin")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="fp32 (default); q8_0: int8 weights in groups with fp32 "
                        "scales; q4_0: 4-bit weights in groups of 32 (llama.cpp's Q4_0), the head q8_0; bf16: bfloat16 weights")
    parser.add_argument("--group_size", type=int, default=64, help="q8_0 group size, 32 or 64 (default 64; q4_0's is 32)")
    args = parser.parse_args(argv)
    if error := model_arguments_error(args):
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        model = load_model(checkpoint=args.checkpoint, hf=args.hf)
        size = export(model, args.out, args.dtype, args.group_size)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {size / 1e6:.1f} MB, {args.dtype}, {model.config.n_layer} layers, {model.config.n_embd} wide")
    return 0


if __name__ == "__main__":
    sys.exit(main())
