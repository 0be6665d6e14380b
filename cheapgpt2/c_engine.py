"""
The C engine (c/gpt, built by `make c`) run from Python, as the benchmarks run it: a command under a thread
count (OMP_NUM_THREADS), and the figures of its --bench line (measure/bench_c.py, measure/bench_serve.py).
"""

import os
import re
import subprocess

OURS_LINE = re.compile(r"prefill (\d+) tokens ([\d.]+) s ([\d.]+) tok/s .*\| time to first token ([\d.]+) ms \| "
                       r"decode (\d+) tokens ([\d.]+) s ([\d.]+) tok/s .*\| peak memory ([\d.]+) MB")
OPEN_LINE = re.compile(r"\| open ([\d.]+) s, of which the repacked weights: ([\d.]+) MB")


def run_with_threads(cmd, threads, cwd=None):
    """stdout + stderr of cmd with OMP_NUM_THREADS=threads; ValueError with its message when it fails."""
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if out.returncode != 0:
        raise ValueError(f"{' '.join(cmd)[:200]} failed: {(out.stderr.strip() or out.stdout.strip())[-500:]}")
    return out.stdout + out.stderr


def engine_bench(binary, path, prompt_len, new_tokens, threads):
    """One c/gpt --bench run, greedy as llama2.c's: {prefill, ttft_ms, decode, memory_mb, open_s, repacked_mb}."""
    cmd = [binary, path, "--bench", "--prompt_len", str(prompt_len), "-n", str(new_tokens + 1), "--threads", str(threads), "-t", "0"]
    out = run_with_threads(cmd, threads)
    match, opened = OURS_LINE.search(out), OPEN_LINE.search(out)
    if match is None or opened is None:
        raise ValueError(f"{' '.join(cmd)} printed no --bench line")
    return {"prefill": float(match[3]), "ttft_ms": float(match[4]), "decode": float(match[7]), "memory_mb": float(match[8]),
            "open_s": float(opened[1]), "repacked_mb": float(opened[2])}
