"""
The C engine (c/gpt, built by `make c`) run from Python, as the benchmarks run it: a command under a thread
count (OMP_NUM_THREADS), and the figures of its --bench line (measure/bench_c.py, measure/bench_serve.py). Beside
it, llama.cpp as measure/bench_serve.py and bench_xl.py run it: the same random weights written for both engines,
one stream of each timed, and the tables' cells (the median of the rounds with their range).
"""

import dataclasses
import json
import os
import re
import statistics
import subprocess

import torch

from cheapgpt2 import engine_file, gguf_file
from cheapgpt2.model import GPT, GPTConfig

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


DTYPES = ("fp32", "q8_0", "q4_0", "bf16")
# the peer's types: f32 and Q8_0 written by export_gguf.py; Q4_0 and BF16 by llama.cpp's own llama-quantize from the
# f32 file where the build has it (its Q4_0 keeps the tied embedding in Q6_K: what llama.cpp's users run), else
# export_gguf.py's (the same numbers as ours)
GGUF_TYPES = {"fp32": "f32", "q8_0": "q8_0", "q4_0": "q4_0", "bf16": "bf16"}
QUANTIZE_TYPES = {"q4_0": "Q4_0", "bf16": "BF16"}
PEER_SECONDS = 600  # one llama-bench run: a bound, not an expectation


def write_models(out_dir, shape, peer_dir, dtypes=DTYPES):
    """{(engine, dtype): path}: the same random weights of a model shaped by `shape` (GPTConfig's fields) in our
    format and, for the peer (a llama.cpp build directory, or None), in GGUF."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**shape)).eval()
    paths = {}
    for dtype in dtypes:
        paths[("ours", dtype)] = os.path.join(out_dir, f"model_{dtype}.bin")
        engine_file.export(model, paths[("ours", dtype)], dtype=dtype)
    if peer_dir:
        ckpt = os.path.join(out_dir, "ckpt.pt")
        torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, ckpt)
        f32 = os.path.join(out_dir, "model_f32.gguf")
        gguf_file.export(ckpt, f32, "f32")
        quantizer = os.path.join(peer_dir, "bin", "llama-quantize")
        for dtype in dtypes:
            path = paths[("llama.cpp", dtype)] = os.path.join(out_dir, f"model_{GGUF_TYPES[dtype]}.gguf")
            if dtype in QUANTIZE_TYPES and os.path.isfile(quantizer):
                run_with_threads([quantizer, f32, path, QUANTIZE_TYPES[dtype]], 2)
            elif dtype != "fp32":
                gguf_file.export(ckpt, path, GGUF_TYPES[dtype])
    return paths


def single_stream(engine, path, threads, peer_dir, ours_binary, tests):
    """{row: tokens/s} of one stream, the rows named by `tests` (dict(prompts=the prefills' lengths, new_tokens=
    the tokens each decode makes, depths=the decodes' depths besides the start)): c/gpt --bench, one run per prompt
    length giving its prefill and the decode after it, or llama-bench, whose pp/tg tests are these rows (-d: the
    tokens already in the cache when its tg starts). Ours also give what opening the model cost: rows "open s" (the
    weights' repacking included), "repacked MB" and "peak memory MB" (after the longest prompt)."""
    new = tests["new_tokens"]
    rows = {f"prefill {n}": (n, "prefill", ["-p", str(n), "-n", "0"]) for n in tests["prompts"]}
    rows[f"decode {new} from the start"] = (1, "decode", ["-p", "0", "-n", str(new)])
    for depth in tests["depths"]:
        rows[f"decode {new} at depth {depth}"] = (depth, "decode", ["-p", "0", "-n", str(new), "-d", str(depth)])
    rates, ours_runs = {}, {}
    for row, (ours_prompt, rate, peer_args) in rows.items():
        if engine == "ours":  # one --bench run gives a prompt length's prefill and decode rates
            if ours_prompt not in ours_runs:
                ours_runs[ours_prompt] = engine_bench(ours_binary, path, ours_prompt, new, threads)
            rates[row] = ours_runs[ours_prompt][rate]
            continue
        cmd = [os.path.join(peer_dir, "bin", "llama-bench"), "-m", path, "-t", str(threads), "-r", "1", "-o", "json",
               *peer_args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=PEER_SECONDS)
        if out.returncode != 0:
            raise ValueError(f"{' '.join(cmd)} failed: {out.stderr.strip()[-300:]}")
        rates[row] = json.loads(out.stdout)[0]["avg_ts"]
    if engine == "ours":
        longest = ours_runs[max(ours_runs)]
        rates.update({"open s": longest["open_s"], "repacked MB": longest["repacked_mb"],
                      "peak memory MB": longest["memory_mb"]})
    return rates


def summarize(samples):
    """(median, low, high) of a list of numbers, or None."""
    values = [v for v in samples if v is not None]
    return (statistics.median(values), min(values), max(values)) if values else None


def cell(stat, scale=1.0, fmt="{:,.1f}"):
    """A (median, low, high) as `median (low–high)`, scaled; — when missing."""
    if stat is None:
        return "—"
    median, low, high = (v * scale for v in stat)
    return fmt.format(median) + (f" ({fmt.format(low)}–{fmt.format(high)})" if high > low else "")


def ratio(a, b):
    return f"{a[0] / b[0]:.2f}x" if a and b else "—"
