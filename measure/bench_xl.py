"""
One stream at GPT-2 XL's shape (1,558M: 48 layers, 1,600 wide, 25 heads, 1,024 positions): c/gpt --bench beside
llama.cpp's llama-bench, every weight type, the same threads. Issue 36 asks each type to be at least as fast as
llama.cpp at this shape, where a token reads 12 times 124M's bytes: prefill of 256 tokens, and decode of 64 tokens
from the start and at depth 256.

    make c && make bench_xl LLAMACPP=/tmp/llama.cpp/build     # the comparison (about 30 minutes on 2 cores) -> media/
    python -m measure.bench_xl --llamacpp DIR --rounds 1 --dtypes q4_0    # one type, one round -> out/bench_xl.md
    python -m measure.bench_xl --tiny --rounds 1                  # a tiny model, ours alone (what the tests run) -> out/

The weights are random (the work per token does not depend on their values) and written as bench_serve.py writes
them: export.py for ours; for the peer, export_gguf.py's f32 and q8_0 and llama-quantize's Q4_0 and BF16 of that f32
file. They take about 30 GB of temporary disk and 14 GB of memory while being written. Per round and type, the
engines run one after the other, the order alternating between rounds; the table gives the median of the rounds
with their range, and whether each row is at least llama.cpp's rate.

The table goes to media/bench_xl.md only from the comparison (--llamacpp, --rounds and --threads at their
defaults, every type); any other run writes out/bench_xl.md, unless --out names the file.
"""

import argparse
import os
import sys
import tempfile
import time

from cheapgpt2.common import REPO, hardware, write_atomically
from cheapgpt2.c_engine import DTYPES, cell, ratio, single_stream, summarize, write_models

# GPT-2 XL (OpenAI's 1.5B), and a tiny model for the tests; one prefill, and the decodes after it and from the start
SHAPES = {"xl": dict(block_size=1024, n_layer=48, n_head=25, n_embd=1600),
          "tiny": dict(block_size=64, n_layer=2, n_head=2, n_embd=64)}
TESTS = {"xl": dict(prompts=(256,), new_tokens=64, depths=(256,)),
         "tiny": dict(prompts=(8, 16, 32), new_tokens=8, depths=(16, 32))}

COMMITTED_TABLE = os.path.join(REPO, "media", "bench_xl.md")
PARTIAL_TABLE = os.path.join(REPO, "out", "bench_xl.md")


def markdown(single, note):
    """The rows of each type: ours, the peer's, their ratio and whether it is at least 1; then ours' start costs."""
    lines = [note, "", "| type | test | c/gpt tok/s | llama.cpp tok/s | c/gpt / llama.cpp | ≥ 1.0x |",
             "|---|---|---:|---:|---:|---|"]
    costs = []
    for (dtype, test), by_engine in single.items():
        ours, peer = by_engine.get("ours"), by_engine.get("llama.cpp")
        if not test.startswith(("prefill", "decode")):
            costs.append(f"{dtype} {test} {cell(ours, fmt='{:,.2f}')}")
            continue
        met = "—" if not (ours and peer) else "yes" if ours[0] >= peer[0] else f"no, by {(1 - ours[0] / peer[0]) * 100:.0f}%"
        lines.append(f"| {dtype} | {test} | {cell(ours)} | {cell(peer)} | {ratio(ours, peer)} | {met} |")
    lines += ["", "What c/gpt's start costs (opening the model, its weights repacked for the kernels included; peak "
              "memory after the prompt): " + "; ".join(costs)]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llamacpp", metavar="DIR", help="a llama.cpp build directory with bin/llama-bench (the peer)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, median reported with the range (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each engine (default 2)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help=f"weight types (default {','.join(DTYPES)})")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of GPT-2 XL's shape")
    parser.add_argument("--engine", default=os.path.join(REPO, "c", "gpt"), help="our engine (default c/gpt)")
    parser.add_argument("--out", help="the table's file (default: media/bench_xl.md from the comparison, "
                                      "out/bench_xl.md from any other run)")
    args = parser.parse_args(argv)
    if args.out is None:
        full = args.llamacpp and all(getattr(args, name) == parser.get_default(name)
                                     for name in ("rounds", "threads", "dtypes", "tiny"))
        args.out = COMMITTED_TABLE if full else PARTIAL_TABLE
    return args


def main(argv=None):
    args = parse_args(argv)
    shape = "tiny" if args.tiny else "xl"
    dtypes = args.dtypes.split(",")
    try:
        if args.rounds < 1 or args.threads < 1:
            raise ValueError("--rounds and --threads must be at least 1")
        if not set(dtypes) <= set(DTYPES):
            raise ValueError(f"--dtypes takes some of {','.join(DTYPES)}, got {args.dtypes!r}")
        if args.llamacpp and not os.path.isfile(os.path.join(args.llamacpp, "bin", "llama-bench")):
            raise ValueError(f"{args.llamacpp} holds no bin/llama-bench: build llama.cpp with CMake first")
        if not os.access(args.engine, os.X_OK):
            raise ValueError(f"{args.engine} is not built: run `make c`")
        engines = ["ours"] + (["llama.cpp"] if args.llamacpp else [])
        samples = {}  # (dtype, test): {engine: [rate per round]}
        with tempfile.TemporaryDirectory() as tmp:
            print(f"writing GPT-2 {shape}'s random weights as {', '.join(dtypes)}", flush=True)
            paths = write_models(tmp, SHAPES[shape], args.llamacpp, dtypes)
            for round_ in range(args.rounds):
                for dtype in dtypes:
                    for engine in engines if round_ % 2 == 0 else engines[::-1]:
                        rates = single_stream(engine, paths[(engine, dtype)], args.threads, args.llamacpp, args.engine,
                                              TESTS[shape])
                        for test, rate in rates.items():
                            samples.setdefault((dtype, test), {}).setdefault(engine, []).append(rate)
                        print(f"round {round_ + 1}: {engine} {dtype}: "
                              + ", ".join(f"{test} {rate:,.1f}" for test, rate in rates.items()), flush=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    single = {key: {engine: summarize(rates) for engine, rates in by_engine.items()} for key, by_engine in samples.items()}
    dims = SHAPES[shape]
    note = (f"`python -m measure.bench_xl{' --tiny' if args.tiny else ''}{' --llamacpp DIR' if args.llamacpp else ''}` on "
            f"{hardware()}, {time.strftime('%Y-%m-%d')}. GPT-2 {shape} shape ({dims['n_layer']} layers, {dims['n_embd']} "
            f"wide, {dims['block_size']} positions), random weights, {args.threads} threads, one stream (`c/gpt --bench`, "
            f"`llama-bench -r 1`); median of {args.rounds} round(s), range in brackets. llama.cpp's Q4_0 and BF16 are "
            f"llama-quantize's of its f32 file (its Q4_0 keeps the tied embedding in Q6_K); our q8_0 has groups of 64 "
            f"with fp32 scales, llama.cpp's Q8_0 blocks of 32 with fp16 scales.")
    table = markdown(single, note)
    print(table)
    write_atomically(args.out, table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
