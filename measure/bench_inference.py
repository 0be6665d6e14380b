"""
The inference benchmark: for one model and each quantization scheme (none first), quality on validation tokens,
speed at batch 1 with the KV cache, and memory and size, as one table written to media/bench_inference.md and printed.

    make bench_inference                                                   # the project's CPU model (make train_quant_cpu)
    python -m measure.bench_inference out/quant_cpu/ckpt.pt --data_dir data/shakespeare
    python -m measure.bench_inference --hf gpt2 --data_dir data/fineweb_edu --schemes none,int8wo,int8dq,q8_0 --compile off

Columns:
- quality, on the first --eval_tokens validation tokens cut into windows of the model's context (at most 1024); the
  same tokens for every row: loss; perplexity ratio to none = exp(loss - loss of none); mean KL divergence
  KL(none || row) of the next-token distributions; top-1 agreement: how often both pick the same most likely token.
- speed at batch 1 with the KV cache, greedy: a --prompt_tokens prompt (512) is prefilled, then --decode_tokens
  (128, 256) new tokens are decoded one at a time. Prefill tok/s and time to first token (prefill plus picking the
  first token) come from the runs of the first decode length; each figure is the median of --runs runs (>= 5),
  after one warm-up run (which is when torch.compile compiles).
- memory: the bytes of the weights the model holds, the quantized matrices' bytes against their fp32 bytes, the size
  of its state_dict saved with torch.save, and the peak resident memory of a fresh process that loads the model,
  quantizes it and generates (measured in a child process per row, so that rows do not inherit each other's peak).

Backends (--backends): "pytorch" is model.py with quantize.py; "c" is the C engine (make c) on files export.py writes
for the schemes it runs: none (fp32), q8_0 and q8_0-g32. Its rows are timed by the engine's own clock (--bench) at the
same --threads, its peak memory is the engine process's own, and its quality columns compare its logits with PyTorch's
none row: the C engine's error and the scheme's together. BACKENDS maps a name to a function (args, scheme,
base_model) -> an object with Runner's methods (logits, may return None to leave quality out; time_generation; memory;
compiled, None: not applicable), or None where the backend has no such scheme.
"""

import argparse
import datetime
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

from cheapgpt2 import engine_file
from cheapgpt2.checkpoint import add_model_arguments, load_model, model_arguments_error
from cheapgpt2.common import hardware, write_atomically
from cheapgpt2.data import read_shard
from cheapgpt2.generate import new_kv_cache
from cheapgpt2.model import log_probs
from cheapgpt2.quantize import Int4Linear, Int8Linear, Q8_0Linear, SCHEMES, quantize
from cheapgpt2.tokenizer import GPT2_VOCAB_SIZE

DEFAULT_SCHEMES = "none,int8wo,int8dq,int8dq-pertensor,int4wo-g32,int4wo-g64,int4wo-g128,q8_0,q8_0-g32,q4_0,q4_0-head,bf16"


# -----------------------------------------------------------------------------
# quality: the same windows of validation tokens through every model

def validation_windows(data_dir, eval_tokens, context):
    """(inputs, targets), each (windows, context), from the first eval_tokens + 1 tokens of data_dir's val shard."""
    files = sorted(glob.glob(os.path.join(glob.escape(data_dir), "*_val_*.bin")))
    if not files:
        raise FileNotFoundError(f"no *_val_*.bin shard in {data_dir}; run prepare_data.py first (make data_shakespeare)")
    tokens = torch.from_numpy(read_shard(files[0])[:eval_tokens + 1].astype("int64"))
    windows = (len(tokens) - 1) // context
    if windows == 0:
        raise ValueError(f"{files[0]} has {len(tokens)} tokens, fewer than one window of {context} + 1")
    n = windows * context
    return tokens[:n].view(windows, context), tokens[1:n + 1].view(windows, context)


def quality_sums(reference_logits, logits, targets):
    """Sums over the positions of one batch: the row's cross-entropy, KL(reference || row) of the next-token
    distributions, and how many positions have the same argmax; with the number of positions. The distributions
    are over the tokenizer's tokens: model.py's head puts the padding rows at -inf (where KL's 0 * inf would be
    nan), and c/gpt --dump_logits writes them as computed, so both are cut to the tokens first."""
    reference_logits, logits = reference_logits[..., :GPT2_VOCAB_SIZE], logits[..., :GPT2_VOCAB_SIZE]
    log_p_reference, log_p = log_probs(reference_logits), log_probs(logits)
    return {
        "loss": -log_p.gather(-1, targets[..., None]).sum().item(),
        "kl": (log_p_reference.exp() * (log_p_reference - log_p)).sum().item(),
        "top1": (reference_logits.argmax(-1) == logits.argmax(-1)).sum().item(),
        "positions": targets.numel(),
    }


def measure_quality(runners, inputs, targets):
    """{row name: {loss, ppl_ratio, kl, top1}} for runners {name: Runner}; the first runner is the reference (none)."""
    names = list(runners)
    totals = {name: {"loss": 0.0, "kl": 0.0, "top1": 0, "positions": 0} for name in names}
    for window, window_targets in zip(inputs, targets):  # one window at a time: batch 1, bounded memory
        reference = runners[names[0]].logits(window)
        for name in names:
            logits = reference if name == names[0] else runners[name].logits(window)
            if logits is None:
                continue
            for key, value in quality_sums(reference, logits, window_targets).items():
                totals[name][key] += value
    results, reference_loss = {}, totals[names[0]]["loss"] / totals[names[0]]["positions"]
    for name, t in totals.items():
        if t["positions"]:
            loss = t["loss"] / t["positions"]
            results[name] = {"loss": loss, "ppl_ratio": float(torch.tensor(loss - reference_loss).exp()),
                             "kl": t["kl"] / t["positions"], "top1": t["top1"] / t["positions"]}
    return results


# -----------------------------------------------------------------------------
# the PyTorch backend: model.py + quantize.py

def tensor_bytes(tensors):
    """Bytes of the distinct tensors (a tied matrix counts once)."""
    seen, total = set(), 0
    for t in tensors:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.nbytes
    return total


def matrix_tensors(model):
    """The tensors that hold the matrices quantize() quantizes (block linears and the head), biases left out."""
    matrix_types = (nn.Linear, Q8_0Linear, Int8Linear, Int4Linear)  # an nn.Linear before quantize(), one of these after
    modules = [m for m in model.transformer.h.modules() if isinstance(m, matrix_types)] + [model.lm_head]
    return [t for m in modules for name, t in [*m.named_parameters(), *m.named_buffers()] if name != "bias"]


class Runner:
    """One PyTorch model (one scheme, compiled or not) as the benchmark uses it."""

    def __init__(self, model, compiled=False):
        self.model = model
        self.is_compiled = compiled
        self.forward_cached = None  # made at the first timing: quality needs only forward

    def compiled(self):
        """The same model under torch.compile (compiled at its first call: the warm-up run)."""
        return Runner(self.model, compiled=True)

    def memory(self, base_model):
        return memory_row(self.model, base_model)

    @torch.no_grad()
    def logits(self, window):
        """(T, vocab) fp32 logits for one window (T,) of tokens."""
        return self.model(window[None])[0][0].float()

    @torch.no_grad()
    def time_generation(self, prompt, new_tokens):
        """Greedy, batch 1, with the KV cache: (seconds to the first new token, seconds for the new_tokens - 1 after it)."""
        if self.forward_cached is None:
            forward_cached = self.model.forward_cached
            self.forward_cached = torch.compile(forward_cached, dynamic=True) if self.is_compiled else forward_cached
        cache = new_kv_cache(self.model, 1)
        start = time.perf_counter()
        token = self.forward_cached(prompt[None], cache)[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        first = time.perf_counter()
        for _ in range(new_tokens - 1):
            token = self.forward_cached(token, cache)[:, -1].argmax(-1, keepdim=True)
        token.item()
        return first - start, time.perf_counter() - first


def pytorch_backend(args, scheme, base_model):
    return Runner(quantize(base_model, scheme))


# -----------------------------------------------------------------------------
# the C engine backend: c/gpt (make c) on files written by export.py; one engine run per call

QUANT_CKPT = os.path.join("out", "quant_cpu", "ckpt.pt")  # make train_quant_cpu's model: the one media/ holds
C_SCHEMES = {"none": ("fp32", 64), "q8_0": ("q8_0", 64), "q8_0-g32": ("q8_0", 32), "q4_0": ("q4_0", 32),
             "bf16": ("bf16", 0)}  # scheme -> export dtype, group size
C_BENCH_LINE = re.compile(r"time to first token ([\d.]+) ms \| decode (\d+) tokens ([\d.]+) s .* peak memory ([\d.]+) MB")


class CEngineRunner:
    """The model exported for c/gpt in one scheme, as the benchmark uses it. The engine's own clock times prefill
    and decode, so starting the process and mapping the file are left out, as loading is for PyTorch's rows."""

    def __init__(self, binary, files, path, weight_bytes, threads, measure_rss):
        self.files = files  # the TemporaryDirectory that holds path: removed with the runner, or when the program exits
        self.binary, self.path, self.weight_bytes, self.threads, self.measure_rss = binary, path, weight_bytes, threads, measure_rss

    def compiled(self):
        return None  # torch.compile does not apply

    def run(self, tokens, *flags):
        argv = [self.binary, self.path, "--tokens", " ".join(str(t) for t in tokens.tolist()), "--threads", str(self.threads), *flags]
        result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(self.threads)})
        if result.returncode != 0:
            raise ValueError(f"{self.binary} failed: {result.stderr.strip()}")
        return result.stdout

    def logits(self, window):
        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "logits.f32")
            self.run(window, "-n", "1", "-t", "0", "--print_ids", "--dump_logits", dump)
            return torch.from_numpy(np.fromfile(dump, dtype=np.float32)).view(len(window), -1)

    def time_generation(self, prompt, new_tokens):
        match = C_BENCH_LINE.search(self.run(prompt, "--bench", "-n", str(new_tokens)))
        return float(match[1]) / 1000, float(match[3])

    def memory(self, base_model):
        peak = None
        if self.measure_rss:  # the whole engine: mapped weights, KV cache and buffers, after a 64-token prompt and 32 tokens
            peak = float(C_BENCH_LINE.search(self.run(torch.zeros(64, dtype=torch.long), "--bench", "-n", "32"))[4]) * 1e6
        return {"weight_bytes": self.weight_bytes, "weight_ratio": self.weight_bytes / tensor_bytes(base_model.state_dict().values()),
                "matrix_ratio": None, "file_bytes": os.path.getsize(self.path), "peak_rss": peak}


def c_backend(args, scheme, base_model):
    """A CEngineRunner for the schemes c/gpt runs (C_SCHEMES); None for the others."""
    if scheme not in C_SCHEMES:
        print(f"c: no row for {scheme} (the C engine runs {', '.join(C_SCHEMES)})", flush=True)
        return None
    if not os.path.exists(args.c_binary):
        raise FileNotFoundError(f"{args.c_binary} does not exist; build the C engine with `make c`")
    dtype, group_size = C_SCHEMES[scheme]
    files = tempfile.TemporaryDirectory(prefix="bench_inference_c_")
    path = os.path.join(files.name, f"{scheme}.bin")
    engine_file.export(base_model, path, dtype=dtype, group_size=group_size)
    weight_bytes = sum(t.nbytes for t in engine_file.model_tensors(base_model, dtype, group_size))
    return CEngineRunner(args.c_binary, files, path, weight_bytes, args.threads or torch.get_num_threads(), not args.no_rss)


BACKENDS = {"pytorch": pytorch_backend, "c": c_backend}


def memory_row(model, base_model):
    """Weight bytes, the quantized matrices' bytes over their fp32 bytes, and the saved file size."""
    weights = tensor_bytes(model.state_dict().values())
    matrices = tensor_bytes(matrix_tensors(model)) / tensor_bytes(matrix_tensors(base_model))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        try:
            torch.save(model.state_dict(), path)
            file_bytes = os.path.getsize(path)
        except Exception:  # a tensor subclass torch cannot save: say so in the table, not as a crash
            file_bytes = None
    return {"weight_bytes": weights, "weight_ratio": weights / tensor_bytes(base_model.state_dict().values()),
            "matrix_ratio": matrices, "file_bytes": file_bytes}


def peak_rss_in_child(args, scheme):
    """(peak, current) resident memory in bytes of a fresh process that loads the model, quantizes it and generates
    32 tokens: the peak includes loading the fp32 checkpoint; current is what stays resident while generating."""
    argv = [sys.executable, "-m", "measure.bench_inference", *([os.path.abspath(args.checkpoint)] if args.checkpoint else ["--hf", os.path.abspath(args.hf) if os.path.isdir(args.hf) else args.hf]),
            "--rss_probe", scheme, "--prompt_tokens", str(args.prompt_tokens)]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=repo)
    if result.returncode != 0:
        return None, None
    peak, current = result.stdout.split()[-2:]
    return int(peak), int(current)


def rss_probe(args, scheme):
    model = quantize(load_model(args.checkpoint, args.hf), scheme)
    Runner(model).time_generation(torch.zeros(min(args.prompt_tokens, 64), dtype=torch.long), 32)
    print(memory_of_this_process("VmHWM"), memory_of_this_process("VmRSS"))
    return 0


def memory_of_this_process(field):
    """Bytes. Linux: VmHWM, the high-water mark of this program's own memory (ru_maxrss would also count the
    parent's at the fork before exec), or VmRSS, what is resident now; None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None


# -----------------------------------------------------------------------------
# the table

def median_speed(runner, prompt, decode_lengths, runs):
    """Medians over runs: prefill tok/s, time to first token (ms), and decode tok/s for each decode length."""
    speed = {}
    for i, new_tokens in enumerate(decode_lengths):
        runner.time_generation(prompt, 4 if i else new_tokens)  # warm-up: caches, allocator, and torch.compile's compilation
        times = [runner.time_generation(prompt, new_tokens) for _ in range(runs)]
        if i == 0:
            ttft = statistics.median(t[0] for t in times)
            speed["prefill"] = len(prompt) / ttft
            speed["ttft_ms"] = 1000 * ttft
        speed[f"decode{new_tokens}"] = (new_tokens - 1) / statistics.median(t[1] for t in times)
    return speed


def fmt(value, spec):
    return "—" if value is None else format(value, spec)


def render(rows, info):
    decode = info["decode_lengths"]
    header = ["backend", "scheme", "compile", "loss", "ppl ratio", "KL to none", "top-1 agree",
              f"prefill {info['prompt_tokens']} tok/s", "TTFT ms", *[f"decode {n} tok/s" for n in decode],
              "decode vs none", "weights MB", "matrices vs fp32", "model vs fp32", "file MB", "peak RSS MB", "RSS MB generating"]
    lines = [
        f"Model: {info['model']} ({info['parameters']:,} parameters, context {info['context']}). "
        + (f"Quality: {info['eval_positions']:,} validation tokens of {info['data_dir']}. " if info['eval_positions'] else "")
        + f"Speed: batch 1, KV cache, greedy, median of {info['runs']} runs after a warm-up.",
        f"Hardware: {info['hardware']}; {info['threads']} threads; torch {info['torch']}, torchao {info['torchao']}; "
        f"{info['date']}. `{info['command']}`",
        "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reference_decode = {r["compile"]: r.get(f"decode{decode[-1]}") for r in rows if r["scheme"] == "none" and r["backend"] == "pytorch"}
    for r in rows:
        q = r.get("quality") or {}
        base = reference_decode.get(r["compile"], reference_decode.get("off"))
        relative = r.get(f"decode{decode[-1]}") / base if base and r.get(f"decode{decode[-1]}") else None
        mb = lambda b: None if b is None else b / 1e6
        lines.append("| " + " | ".join([
            r["backend"], r["scheme"], r["compile"], fmt(q.get("loss"), ".4f"), fmt(q.get("ppl_ratio"), ".4f"),
            fmt(None if "kl" not in q else max(q["kl"], 0.0), ".5f"),  # KL >= 0; float rounding can leave -1e-9
            fmt(None if "top1" not in q else 100 * q["top1"], ".2f") + ("%" if "top1" in q else ""),
            fmt(r.get("prefill"), ",.0f"), fmt(r.get("ttft_ms"), ".1f"), *[fmt(r.get(f"decode{n}"), ",.1f") for n in decode],
            fmt(relative, ".2f") + ("x" if relative else ""), fmt(mb(r.get("weight_bytes")), ".1f"),
            fmt(r.get("matrix_ratio"), ".3f"), fmt(r.get("weight_ratio"), ".3f"), fmt(mb(r.get("file_bytes")), ".1f"),
            fmt(mb(r.get("peak_rss")), ",.0f"), fmt(mb(r.get("rss")), ",.0f")]) + " |")
    return "\n".join(lines) + "\n"


def write_table(rows, info, out):
    """The table as markdown, written atomically to out (and its rows beside it as .json) unless out is ''."""
    table = render(rows, info)
    if out:
        write_atomically(out, table)
        write_atomically(os.path.splitext(out)[0] + ".json", json.dumps({"info": info, "rows": rows}, indent=1, default=str))
    return table


def torchao_version():
    try:
        from importlib.metadata import version
        return version("torchao")
    except Exception:
        return "not installed"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, "measure")
    parser.add_argument("--data_dir", default="data/shakespeare", help="shards from prepare_data.py; its val shard gives the quality tokens (default data/shakespeare)")
    parser.add_argument("--schemes", default=DEFAULT_SCHEMES, help=f"comma-separated schemes, none first (default {DEFAULT_SCHEMES}); any of {', '.join(SCHEMES)}")
    parser.add_argument("--backends", default="pytorch", help=f"comma-separated backends (default pytorch); any of {', '.join(BACKENDS)} (c: the C engine, schemes {', '.join(C_SCHEMES)})")
    parser.add_argument("--c_binary", default="c/gpt", help="the C engine for --backends c, built by `make c` (default c/gpt)")
    parser.add_argument("--eval_tokens", type=int, default=8192, help="validation tokens scored for quality (default 8192); 0: no quality columns (speed and memory only)")
    parser.add_argument("--prompt_tokens", type=int, default=512, help="prompt length for prefill and decode (default 512)")
    parser.add_argument("--decode_tokens", default="128,256", help="comma-separated numbers of new tokens to decode (default 128,256)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure, the median reported (default 5, at least 5 for the table)")
    parser.add_argument("--compile", default="off,on", help="torch.compile settings to time: off, on or off,on (default off,on)")
    parser.add_argument("--compile_schemes", default=None, help="time compile on for these schemes only (default: every scheme); compiling takes minutes per scheme on a busy CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, usually the core count)")
    parser.add_argument("--no_rss", action="store_true", help="skip the peak-memory child processes (faster)")
    parser.add_argument("--out", default=None, help="where to write the table ('' for none); default media/bench_inference.md "
                        f"for {QUANT_CKPT} (make bench_inference's model, which the README cites), else out/bench_inference.md")
    parser.add_argument("--refresh_memory", action="store_true", help="only measure the memory and size columns again for the rows of --out's .json, and rewrite its table")
    parser.add_argument("--rss_probe", metavar="SCHEME", help=argparse.SUPPRESS)  # internal: the child process of peak_rss_in_child
    args = parser.parse_args(argv)
    if args.out is None:  # another model (--hf gpt2, your checkpoint) never overwrites the committed table
        committed = args.checkpoint is not None and os.path.normpath(args.checkpoint) == QUANT_CKPT
        args.out = "media/bench_inference.md" if committed else "out/bench_inference.md"
    return args


def main(argv=None):
    args = parse_args(argv)
    if error := model_arguments_error(args):
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_probe:
        return rss_probe(args, args.rss_probe)
    if args.refresh_memory:
        with open(os.path.splitext(args.out)[0] + ".json") as f:
            saved = json.load(f)
        base_model = load_model(args.checkpoint, args.hf)
        for scheme in {row["scheme"] for row in saved["rows"] if row["backend"] == "pytorch"}:
            memory = memory_row(quantize(base_model, scheme), base_model)
            memory["peak_rss"], memory["rss"] = peak_rss_in_child(args, scheme)
            for row in saved["rows"]:
                if row["backend"] == "pytorch" and row["scheme"] == scheme:
                    row.update(memory)
        saved["info"]["command"] += " && python -m measure.bench_inference " + " ".join(sys.argv[1:] if argv is None else argv)
        print(write_table(saved["rows"], saved["info"], args.out))
        return 0
    schemes = [s for s in args.schemes.split(",") if s]
    compiles = [c for c in args.compile.split(",") if c]
    backends = [b for b in args.backends.split(",") if b]
    compile_schemes = schemes if args.compile_schemes is None else args.compile_schemes.split(",")
    try:
        decode_lengths = [int(n) for n in args.decode_tokens.split(",")]
    except ValueError:
        decode_lengths = []
    problems = [f"unknown scheme {s!r} (choose from {', '.join(SCHEMES)})" for s in schemes if s not in SCHEMES]
    problems += [f"unknown backend {b!r} (choose from {', '.join(BACKENDS)})" for b in backends if b not in BACKENDS]
    problems += [f"--compile takes off and/or on, not {c!r}" for c in compiles if c not in ("off", "on")]
    if not decode_lengths or min(decode_lengths) < 2:
        problems.append(f"--decode_tokens takes comma-separated numbers of at least 2, not {args.decode_tokens!r}")
    if schemes[:1] != ["none"]:
        problems.append("--schemes must start with none: every quality figure is relative to it")
    if args.runs < 1:
        problems.append("--runs must be at least 1")
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 1

    try:
        base_model = load_model(args.checkpoint, args.hf)
        context = min(base_model.config.block_size, 1024)
        if args.prompt_tokens + max(decode_lengths) > base_model.config.block_size:
            raise ValueError(f"a {args.prompt_tokens}-token prompt plus {max(decode_lengths)} new tokens pass the model's "
                             f"block_size={base_model.config.block_size}; pass a smaller --prompt_tokens or --decode_tokens")
        inputs, targets = validation_windows(args.data_dir, max(args.eval_tokens, args.prompt_tokens, context), context)
        prompt = inputs.flatten()[:args.prompt_tokens]
        if args.eval_tokens == 0:  # speed and memory only
            inputs, targets = inputs[:0], targets[:0]
        if len(prompt) < args.prompt_tokens:
            raise ValueError(f"the validation tokens are fewer than --prompt_tokens={args.prompt_tokens}")
        runners = {}
        for backend in backends:
            for scheme in schemes:
                runner = BACKENDS[backend](args, scheme, base_model)
                if runner is not None:
                    runners[(backend, scheme)] = runner
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    info = {"model": args.checkpoint or f"--hf {args.hf}", "parameters": base_model.num_params(), "context": context,
            "eval_positions": inputs.numel(), "data_dir": args.data_dir, "runs": args.runs,
            "prompt_tokens": args.prompt_tokens, "decode_lengths": decode_lengths, "hardware": hardware(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "torchao": torchao_version(),
            "date": datetime.date.today().isoformat(),
            "command": "python -m measure.bench_inference " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(f"quality: {inputs.numel():,} tokens, {len(runners)} rows", flush=True)
    try:
        quality = measure_quality(runners, inputs, targets) if len(inputs) else {}
    except ValueError as e:  # the C engine failed
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows, memory = [], {}
    for compile_setting in compiles:  # every compile-off row first: compiling is the slow part
        for (backend, scheme), runner in runners.items():
            timed = runner if compile_setting == "off" else runner.compiled()
            if timed is None or (compile_setting == "on" and scheme not in compile_schemes):
                continue
            if (backend, scheme) not in memory:
                memory[backend, scheme] = {"peak_rss": None, "rss": None, **runner.memory(base_model)}
                if backend == "pytorch" and not args.no_rss:
                    memory[backend, scheme]["peak_rss"], memory[backend, scheme]["rss"] = peak_rss_in_child(args, scheme)
            print(f"timing {backend} {scheme}, compile {compile_setting}", flush=True)
            try:
                speed = median_speed(timed, prompt, decode_lengths, args.runs)
            except Exception as e:  # torch.compile can fail on a path; the row says so, the others still run
                print(f"  {backend} {scheme} compile {compile_setting} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                speed = {}
            rows.append({"backend": backend, "scheme": scheme, "compile": compile_setting if backend == "pytorch" else "—",
                         "quality": quality.get((backend, scheme)), **memory[backend, scheme], **speed})
            write_table(rows, info, args.out)  # after every row: a long run stopped early still leaves its rows

    table = write_table(rows, info, args.out)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
