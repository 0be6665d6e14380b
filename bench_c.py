"""
Speed of the C engine (c/gpt) at GPT-2 124M's shape with random weights: prefill tokens/s of a 512-token prompt,
decode tokens/s over 256 tokens, time to first token and peak memory, fp32 and q8_0, median of 5 runs each
(the two files alternate, so that a busy machine slows both alike). Random weights are enough for speed: the
work per token does not depend on the values.

    make c && python bench_c.py                      # what `make bench_c` runs
    python bench_c.py --runs 3 --threads 1 --out_dir /tmp/bench_c
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch

import export
from model import GPT, GPTConfig

LINE = re.compile(r"prefill (\d+) tokens ([\d.]+) s ([\d.]+) tok/s \(cpu ([\d.]+) s\) \| time to first token ([\d.]+) ms \| "
                  r"decode (\d+) tokens ([\d.]+) s ([\d.]+) tok/s \(cpu ([\d.]+) s\) \| peak memory ([\d.]+) MB")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench_once(binary, path, prompt_len, new_tokens, threads):
    cmd = [binary, path, "--bench", "--prompt_len", str(prompt_len), "-n", str(new_tokens + 1), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    match = LINE.search(out.stdout)
    if out.returncode != 0 or match is None:
        raise ValueError(f"{' '.join(cmd)} failed: {out.stderr.strip() or out.stdout.strip()}")
    g = match.groups()
    return {"prefill": float(g[2]), "prefill_cpu": int(g[0]) / float(g[3]), "ttft_ms": float(g[4]),
            "decode": float(g[7]), "decode_cpu": int(g[5]) / float(g[8]), "memory_mb": float(g[9])}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Benchmark c/gpt at the GPT-2 124M shape, fp32 and q8_0.")
    parser.add_argument("--binary", default="c/gpt", help="the engine, built by `make c` (default c/gpt)")
    parser.add_argument("--out_dir", default="out/bench_c", help="where the random-weight model files go (default out/bench_c)")
    parser.add_argument("--runs", type=int, default=5, help="runs per file; the median is reported (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads (default 2)")
    parser.add_argument("--prompt_len", type=int, default=512, help="prompt tokens for the prefill (default 512)")
    parser.add_argument("--new_tokens", type=int, default=256, help="decoded tokens (default 256)")
    args = parser.parse_args(argv)
    if not os.path.exists(args.binary):
        print(f"error: {args.binary} does not exist; build it with `make c`", file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    paths = {}
    for dtype in ("fp32", "q8_0"):
        paths[dtype] = os.path.join(args.out_dir, f"gpt2_124M_random_{dtype}.bin")
        if not os.path.exists(paths[dtype]):
            torch.manual_seed(0)
            model = GPT(GPTConfig()).eval()  # 12 layers, 768 wide, vocabulary 50304, block 1024, GELU MLP
            export.export(model, paths[dtype], dtype=dtype)
    results = {dtype: [] for dtype in paths}
    try:
        for run in range(args.runs):
            for dtype, path in paths.items():
                results[dtype].append(bench_once(args.binary, path, args.prompt_len, args.new_tokens, args.threads))
                r = results[dtype][-1]
                print(f"run {run + 1} {dtype}: prefill {r['prefill']:.1f} tok/s, decode {r['decode']:.1f} tok/s, "
                      f"TTFT {r['ttft_ms']:.0f} ms", flush=True)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\n{cpu_name()}, {args.threads} threads, {time.strftime('%Y-%m-%d')}, median of {args.runs}; "
          f"prompt {args.prompt_len} tokens, {args.new_tokens} decoded\n")
    print("| file | size | prefill tok/s | decode tok/s | time to first token | peak memory | prefill tok/CPU-s | decode tok/CPU-s |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {dtype} | {os.path.getsize(paths[dtype]) / 1e6:.0f} MB | {med['prefill']:.0f} | {med['decode']:.1f} | "
              f"{med['ttft_ms']:.0f} ms | {med['memory_mb']:.0f} MB | {med['prefill_cpu']:.0f} | {med['decode_cpu']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
