"""
Speed of the C engine (c/gpt) at GPT-2 124M's shape with random weights, fp32 and q8_0, median of --runs runs:
- prefill tokens/s of a 512-token prompt (one batched pass) and the time to the first new token;
- decode tokens/s over 256 tokens after that prompt (positions 512-768), and after a 3-token prompt (positions
  3-259: the span the llama2.c rows cover, so that both read a KV cache of the same length);
- the engine's peak memory.
Random weights are enough for speed: the work per token does not depend on the values.

With --llama2c DIR (a clone of karpathy/llama2.c) the peer runs beside ours, engine after engine in every round, so
that a change in the machine's load hits all alike: its run.c (fp32) and runq.c (int8, groups of 64) built with our
--cflags and with its own Makefile's `runomp` flags (-Ofast -fopenmp -march=native), on a model of the same shape
written by its own model.py and export.py (12 layers, 768 wide, vocabulary 50,304; its SwiGLU hidden of 2048 costs
what GPT-2's 3072-wide GELU MLP costs). llama2.c reads a prompt one token at a time: its prefill figure is that rate.
Its figures are its own "achieved tok/s" line.

    make c && python -m measure.bench_c                                  # what `make bench_c` runs -> out/bench_c/bench_c.md
    git clone https://github.com/karpathy/llama2.c /tmp/llama2.c
    make bench_c LLAMA2C=/tmp/llama2.c                           # with the peer (about 15 minutes on 2 cores) -> media/
    python -m measure.bench_c --runs 3 --threads 1 --out_dir /tmp/bench_c

The table is printed and written: to media/bench_c.md, which the README cites, only by the full comparison
(--llama2c with --runs, --threads, --prompt_len and --new_tokens at their defaults); any other run writes
OUT_DIR/bench_c.md, unless --out names the file.
"""

import argparse
import os
import re
import statistics
import struct
import sys
import time

import torch

from cheapgpt2 import engine_file
from cheapgpt2.c_engine import engine_bench, run_with_threads
from cheapgpt2.common import hardware, write_atomically
from cheapgpt2.model import GPT, GPTConfig

PEER_LINE = re.compile(r"achieved tok/s: ([\d.]+)")
PEER_SHAPE = "dim=768, n_layers=12, n_heads=12, vocab_size=50304, multiple_of=256, max_seq_len=1024"
PEER_EXPORT = f"""
import sys, torch
from model import Transformer, ModelArgs
from export import legacy_export, version2_export
torch.manual_seed(0)
model = Transformer(ModelArgs({PEER_SHAPE})).eval()
legacy_export(model, sys.argv[1])     # run.c's fp32 file
version2_export(model, sys.argv[2])   # runq.c's int8 file, groups of 64
"""


def write_peer_tokenizer(path, vocab_size):
    """A tokenizer file in run.c's format (int32 max length; per token float32 score, int32 length, bytes) with
    vocab_size entries: <unk> <s> </s>, the 256 byte tokens, " ", then unique fillers. run.c reads vocab_size of them."""
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [" "]
    pieces += [f"w{i}" for i in range(vocab_size - len(pieces))]
    write_atomically(path, struct.pack("i", max(len(p) for p in pieces)),
                     *(struct.pack("fi", 0.0, len(piece)) + piece.encode() for piece in pieces))


def make_peer(llama2c, out_dir, cflags):
    """Build llama2.c's run/runq two ways and write its model files: {row name: (binary, model file)} and the
    tokenizer file. Everything goes into out_dir; the clone is only read."""
    missing = [f for f in ("run.c", "runq.c", "model.py", "export.py") if not os.path.exists(os.path.join(llama2c, f))]
    if missing:
        raise ValueError(f"{llama2c} is not a clone of karpathy/llama2.c (no {', '.join(missing)})")
    peer_dir = os.path.join(out_dir, "llama2c")
    os.makedirs(peer_dir, exist_ok=True)
    fp32, int8, tokenizer = (os.path.join(peer_dir, f) for f in ("model_fp32.bin", "model_q80.bin", "tokenizer_50304.bin"))
    if not (os.path.exists(fp32) and os.path.exists(int8)):
        print("writing llama2.c's model files with its own export.py", flush=True)
        run_with_threads([sys.executable, "-c", PEER_EXPORT, os.path.abspath(fp32), os.path.abspath(int8)], 1, cwd=llama2c)
    if not os.path.exists(tokenizer):
        write_peer_tokenizer(tokenizer, 50304)
    rows = {}
    for flags_name, flags in (("its -Ofast", "-Ofast -fopenmp -march=native"), ("our flags", cflags)):
        for source, model in (("run", fp32), ("runq", int8)):
            binary = os.path.join(peer_dir, f"{source}_{'ofast' if flags_name == 'its -Ofast' else 'ours'}")
            run_with_threads(["cc", *flags.split(), "-o", binary, os.path.join(llama2c, f"{source}.c"), "-lm"], 1)
            rows[f"llama2.c {source}, {flags_name}"] = (binary, model)
    return rows, tokenizer


def peer(binary, model, tokenizer, prompt, steps, threads):
    """llama2.c's own achieved tok/s over `steps` positions from `prompt`, greedy."""
    cmd = [binary, model, "-z", tokenizer, "-t", "0", "-n", str(steps), "-i", prompt]
    match = PEER_LINE.search(run_with_threads(cmd, threads))
    if match is None:
        raise ValueError(f"{binary} printed no 'achieved tok/s' line")
    return float(match[1])


def model_files(out_dir, tiny):
    """Our two random-weight files, written once: {dtype: path}."""
    paths = {}
    for dtype in ("fp32", "q8_0"):
        paths[dtype] = os.path.join(out_dir, f"gpt2_{'tiny' if tiny else '124M'}_random_{dtype}.bin")
        if not os.path.exists(paths[dtype]):
            torch.manual_seed(0)
            config = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=128) if tiny else GPTConfig()  # GPTConfig(): 124M
            engine_file.export(GPT(config).eval(), paths[dtype], dtype=dtype)
    return paths


def one_round(args, paths, peers, tokenizer, short_prompt):
    """{row name: figures} of one run of every engine, ours and the peer's alternating."""
    figures = {}
    for dtype, path in paths.items():
        row = engine_bench(args.binary, path, args.prompt_len, args.new_tokens, args.threads)
        row["decode_short"] = engine_bench(args.binary, path, 3, args.new_tokens, args.threads)["decode"]
        figures[f"c/gpt {dtype}"] = row
        for name, (binary, model) in peers.items():
            if ("runq" in name) == (dtype == "q8_0"):
                prefill_prompt = "a" * (args.prompt_len - 2)  # <s>, " ", then one byte token per character
                figures[name] = {"prefill": peer(binary, model, tokenizer, prefill_prompt, args.prompt_len, args.threads),
                                 "decode_short": peer(binary, model, tokenizer, short_prompt, 3 + args.new_tokens, args.threads)}
    return figures


def render(results, sizes, args):
    def cell(row, key, spec):
        values = [r[key] for r in row if key in r]
        return format(statistics.median(values), spec) if values else "—"

    lines = [f"{hardware()}, {args.threads} threads, `{args.cflags}`, {time.strftime('%Y-%m-%d')}, "
             f"median of {args.runs} runs",
             "",
             f"| engine | file | prefill, {args.prompt_len}-token prompt | time to first token | decode {args.new_tokens} "
             f"after it | decode {args.new_tokens} at positions 3-{3 + args.new_tokens} | peak memory |",
             "|---|---|---|---|---|---|---|"]
    for name, row in results.items():
        lines.append(f"| {name} | {sizes[name] / 1e6:.0f} MB | {cell(row, 'prefill', '.1f')} tok/s | {cell(row, 'ttft_ms', '.0f')} ms | "
                     f"{cell(row, 'decode', '.1f')} tok/s | {cell(row, 'decode_short', '.1f')} tok/s | {cell(row, 'memory_mb', '.0f')} MB |")
    def ratio(a, b, key):
        """a over b: the median of the rounds' ratios (each round ran both engines back to back), and their range."""
        ratios = [ra[key] / rb[key] for ra, rb in zip(results[a], results[b])]
        return f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"

    lines.append("")
    lines.append(f"- c/gpt q8_0 over c/gpt fp32, decode at positions 3-{3 + args.new_tokens}: {ratio('c/gpt q8_0', 'c/gpt fp32', 'decode_short')}")
    for name in results:
        if name.startswith("llama2.c"):
            ours_name = "c/gpt q8_0" if "runq" in name else "c/gpt fp32"
            lines.append(f"- {ours_name} over {name}: decode {ratio(ours_name, name, 'decode_short')}, prefill {ratio(ours_name, name, 'prefill')}")
    return "\n".join(lines).replace("| — ms |", "| — |").replace("| — tok/s |", "| — |").replace("| — MB |", "| — |")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="c/gpt", help="the engine, built by `make c` (default c/gpt)")
    parser.add_argument("--out_dir", default="out/bench_c", help="where the random-weight model files (and the peer's builds) go (default out/bench_c)")
    parser.add_argument("--runs", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads (default 2)")
    parser.add_argument("--prompt_len", type=int, default=512, help="prompt tokens for the prefill (default 512)")
    parser.add_argument("--new_tokens", type=int, default=256, help="decoded tokens (default 256)")
    parser.add_argument("--llama2c", metavar="DIR", help="a clone of karpathy/llama2.c: run it beside ours")
    parser.add_argument("--cflags", default="-O3 -march=native -fopenmp", help="the flags `make c` used, for the peer's same-flags build (default: the Makefile's on gcc)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer 64-wide model instead of 124M (a quick check of this script)")
    parser.add_argument("--out", help="the table's file (default: media/bench_c.md from the full comparison with --llama2c, "
                                      "OUT_DIR/bench_c.md from any other run)")
    args = parser.parse_args(argv)
    if args.out is None:  # a partial or exploratory run must not replace the committed comparison
        full = args.llama2c and all(getattr(args, name) == parser.get_default(name)
                                    for name in ("runs", "threads", "prompt_len", "new_tokens", "tiny"))
        args.out = os.path.join("media", "bench_c.md") if full else os.path.join(args.out_dir, "bench_c.md")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not os.path.exists(args.binary):
        print(f"error: {args.binary} does not exist; build it with `make c`", file=sys.stderr)
        return 1
    if args.runs < 1 or args.threads < 1 or args.prompt_len < 3 or args.new_tokens < 2:
        print("error: --runs and --threads take at least 1, --prompt_len at least 3, --new_tokens at least 2", file=sys.stderr)
        return 1
    if args.tiny and args.llama2c:
        print("error: --llama2c runs the peer at the 124M shape; leave out --tiny", file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    try:
        peers, tokenizer = make_peer(args.llama2c, args.out_dir, args.cflags) if args.llama2c else ({}, None)
        paths = model_files(args.out_dir, args.tiny)
        results = {}
        for round_number in range(args.runs):
            for name, row in one_round(args, paths, peers, tokenizer, "a").items():
                results.setdefault(name, []).append(row)
                print(f"round {round_number + 1} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sizes = {f"c/gpt {dtype}": os.path.getsize(path) for dtype, path in paths.items()}
    sizes.update({name: os.path.getsize(model) for name, (_, model) in peers.items()})
    table = render(results, sizes, args)
    print("\n" + table)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(table + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
