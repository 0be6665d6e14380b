"""
Generation speed with and without the KV cache: a 124M-shaped GPT (GPT-2 small's shapes, random weights) on the CPU.

    python -m measure.bench_sample                       # 256 new tokens after a 256-token prompt, median of 3 runs each
    make bench_sample                            # the same
    python -m measure.bench_sample --runs 5 --uncached_runs 1 --uncached_new_tokens 32   # a quicker, conservative no-cache figure

Both paths are generate() (greedy, so they produce the same tokens, which is checked): use_cache=True runs a
prefill over the prompt and then one token per step against the KV cache; use_cache=False reruns the whole
context (up to block_size) for every new token. Tokens/s counts the new tokens over the wall time of the whole
call, prefill included. Prints a markdown table with the hardware and the date. The no-cache path costs more per
token as the context grows, so timing only its first --uncached_new_tokens overstates its speed (and understates
the cache's gain).
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

from cheapgpt2.generate import generate
from cheapgpt2.model import GPT, GPTConfig


def cpu_name():
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def time_generate(model, prompt, new_tokens, use_cache, runs):
    """(seconds of each run, the tokens of the last run)."""
    seconds = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = generate(model, prompt, new_tokens, temperature=0, use_cache=use_cache)
        seconds.append(time.perf_counter() - t0)
    return seconds, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt_tokens", type=int, default=256, help="length of the random prompt (default 256)")
    parser.add_argument("--new_tokens", type=int, default=256, help="tokens generated after it (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs with the cache; the median is reported (default 3)")
    parser.add_argument("--uncached_runs", type=int, default=3, help="timed runs without the cache (default 3; each takes minutes)")
    parser.add_argument("--uncached_new_tokens", type=int, default=0, help="time the no-cache path on this many new tokens only; 0 (default): --new_tokens")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 (default): torch's choice")
    args = parser.parse_args(argv)
    if min(args.prompt_tokens, args.new_tokens, args.runs, args.uncached_runs) < 1 or args.uncached_new_tokens < 0:
        print("error: --prompt_tokens, --new_tokens, --runs and --uncached_runs must be positive", file=sys.stderr)
        return 1
    if args.prompt_tokens + args.new_tokens > GPTConfig.block_size:
        print(f"error: prompt + new tokens must fit GPT-2's context of {GPTConfig.block_size}", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = GPT(GPTConfig()).eval()  # GPT-2 small's shapes: 12 layers, 768 wide, 1024 context, 50,304 tokens
    prompt = torch.randint(0, 50257, (1, args.prompt_tokens))
    generate(model, prompt[:, :16], 4)  # warm-up: first-call allocations out of the timings

    uncached_tokens = min(args.uncached_new_tokens or args.new_tokens, args.new_tokens)
    rows, outputs = [], {}
    for name, use_cache, runs, new_tokens in [("KV cache", True, args.runs, args.new_tokens),
                                              ("no cache", False, args.uncached_runs, uncached_tokens)]:
        seconds, outputs[name] = time_generate(model, prompt, new_tokens, use_cache, runs)
        median = statistics.median(seconds)
        rows.append((name, new_tokens, new_tokens / median, median, runs))
        print(f"{name}: " + ", ".join(f"{s:.2f}s" for s in seconds), file=sys.stderr)
    if not torch.equal(outputs["KV cache"][:, :outputs["no cache"].size(1)], outputs["no cache"]):
        print("error: the two paths generated different tokens", file=sys.stderr)
        return 1

    speedup = rows[0][2] / rows[1][2]
    print(f"124M-shaped GPT (random weights), {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, greedy, float32; "
          f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{datetime.date.today().isoformat()}\n")
    print("| path | new tokens timed | tokens/s (median) | seconds per run (median) | runs |")
    print("|---|---:|---:|---:|---:|")
    for name, new_tokens, tokens_per_second, median, runs in rows:
        print(f"| {name} | {new_tokens} | {tokens_per_second:.2f} | {median:.1f} | {runs} |")
    print(f"\nThe KV cache is {speedup:.0f}x faster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
