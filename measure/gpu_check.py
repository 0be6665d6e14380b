"""
The one command for the first session with a GPU: what the CPU could not show, in about 6 minutes on one
H100 or H200, written to media/gpu_check.md.

    make gpu_check_data            # here, on the CPU, beforehand: data/gpu_check (4 MB of tokens) and .cache/tiktoken
    make gpu_check                 # on the GPU machine: data/gpu_check and .cache/tiktoken must travel there
    make gpu_check DEVICE=cpu      # the same steps at a tiny shape on the CPU (what make test runs)

With this workplace's device tool: run(command="make gpu_check; cp media/gpu_check.md $OUT/",
carry=["data/gpu_check", ".cache/tiktoken"], timeout_s=540); without a .venv there, the Makefile takes the
image's python3 and its torch (the version goes into the report).

The steps, each timed, the table rewritten after each (a run cut short keeps what it measured):
1. torch, CUDA and the GPU's name, and the peak FLOP/s its MFU is measured against
2. bench_train.py for baseline and modern: 3 warm-up steps (the compile), then 10 timed; tokens/s, MFU both
   ways, peak memory, compile seconds
3. train.py: the baseline model, 100 steps of 64 x 1024 tokens on data/gpu_check (Python's standard library,
   2.1M tokens: `get_text.py pystdlib`), compiled; its validation loss must fall
4. the same run with activation checkpointing: the same losses (to 0.05, bf16 and flash attention's
   non-deterministic backward), less peak memory
5. sample.py from step 3's checkpoint
6. configs/speedrun.py for 30 compiled steps: FlexAttention's forward and backward (the CPU runs its forward only)

Time on paper, H100 SXM (an H200 has the same bf16 peak and more memory bandwidth): a baseline step is
0.86 GFLOP x 524,288 tokens, 1.1 s at 40% MFU; compiling GPT-2 124M takes about a minute (nanoGPT's
README). Step 2: 2 x (60 s compile + 13 x 1.1 s) = 150 s, Muon's Newton-Schulz compile perhaps 20 s more;
steps 3 and 4: 2 x (60 s compile + 6.6M tokens at 460K tok/s = 14 s, +1/3 recomputed for step 4, + evals
and a checkpoint) = 170 s; start-up and sampling 20 s: 6 minutes; step 6, another compile and 30 short steps,
about 80 s more. If compiling takes longer than that, --budget_seconds (default 420) skips the steps that would
start past it, and says so, so the whole check stays within the 8 minutes it may take.
Nothing is downloaded: the benchmarks during training are off, the data and GPT-2's BPE come with the tree.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

import torch

from cheapgpt2.common import REPO, cuda_missing_reason, describe_machine, write_atomically
from cheapgpt2.config import TrainConfig
from cheapgpt2.throughput import TINY as BENCH_TINY, bench_config, throughput_table
from cheapgpt2.training import peak_flops_of

BASELINE = os.path.join(REPO, "configs", "baseline.py")
# the GPU run: the baseline's model, 100 steps of one 64 x 1024 micro-batch, no benchmark data (no download)
TRAIN = ["--total_batch_size=65536", "--batch_size=64", "--max_steps=100", "--warmup_steps=10", "--eval_interval=50",
         "--eval_tokens=131072", "--log_interval=10", "--csqa_data=", "--hellaswag_data=", "--sample_tokens=0"]
# the CPU's dry path: the same steps at bench_train's tiny shape, compiled, and 30 training steps
TINY = [arg for arg in BENCH_TINY if not arg.startswith("--compile=")] + ["--compile=True"]
TINY_TRAIN = TINY + ["--max_steps=30", "--warmup_steps=3", "--eval_interval=15", "--eval_tokens=512", "--log_interval=5",
                     "--max_lr=3e-3", "--csqa_data=", "--hellaswag_data=", "--sample_tokens=0"]
SAME_LOSS = 0.05  # activation checkpointing changes what is kept, not the arithmetic: bf16 noise only
LOSS_FALL = 1.0  # an untrained model starts near ln(50257) = 10.8; 100 steps on code must take off at least this


def train_run(cfg_overrides, data_dir, out_dir, config=BASELINE):
    """train.py in a process of its own, from scratch: (log records, peak GPU memory in GiB or None on the CPU)."""
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)  # from scratch, not a resume of an earlier check
    code = subprocess.run([sys.executable, "train.py", config, f"--data_dir={os.path.abspath(data_dir)}",
                           f"--out_dir={os.path.abspath(out_dir)}", *cfg_overrides], cwd=REPO).returncode
    if code != 0:
        raise RuntimeError(f"train.py exited {code} (its output is above)")
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        records = [json.loads(line) for line in f]
    peaks = [r["peak_memory_gib"] for r in records if "peak_memory_gib" in r]  # logged on CUDA only
    return records, max(peaks) if peaks else None


def summarize(records, peak):
    train_records = [r for r in records if "train_loss" in r]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    steady = [r for r in train_records if r.get("tok_per_s")]
    median = sorted(steady, key=lambda r: r["tok_per_s"])[len(steady) // 2] if steady else {}
    return {"val_first": val[0], "val_last": val[-1], "losses": {r["step"]: r["train_loss"] for r in train_records},
            "tok_per_s": median.get("tok_per_s"), "mfu": median.get("mfu"), "mfu_causal": median.get("mfu_causal"),
            "first_step_seconds": train_records[0].get("first_step_seconds"), "peak_gib": peak,
            "compiled_graphs": sorted({r.get("compiled_graphs") for r in train_records}, key=str)}


def fmt(value, spec):
    return "—" if value is None else format(value, spec)


def report(header, sections, checks, stage_seconds):
    lines = [header, ""]
    for title, body in sections:
        lines += [f"### {title}", "", body.rstrip(), ""]
    if checks:
        lines += ["### Checks", ""] + [f"- {'PASS' if ok else 'FAIL'}: {what}" for what, ok in checks] + [""]
    lines += ["Seconds spent: " + ", ".join(f"{k} {v:.0f}" for k, v in stage_seconds.items()), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (default): the check itself; cpu: its dry path at a tiny shape")
    parser.add_argument("--data_dir", default="data/gpu_check", help="token shards (default: data/gpu_check)")
    parser.add_argument("--work_dir", default="out/gpu_check", help="where the runs write (default: out/gpu_check)")
    parser.add_argument("--out", default=None,
                        help="the report (default: media/gpu_check.md on cuda, WORK_DIR/gpu_check_cpu.md on the CPU)")
    parser.add_argument("--budget_seconds", type=float, default=420,
                        help="skip the steps that would start after this many seconds (default 420)")
    args = parser.parse_args(argv)
    start = time.time()
    cpu = args.device == "cpu"
    out = args.out or (os.path.join(args.work_dir, "gpu_check_cpu.md") if cpu else os.path.join(REPO, "media", "gpu_check.md"))
    if not cpu and not torch.cuda.is_available():
        print(f"error: {cuda_missing_reason()}; `make gpu_check DEVICE=cpu` runs the tiny CPU path",
              file=sys.stderr)
        return 1
    if not os.path.isdir(args.data_dir):
        print(f"error: no token shards in {args.data_dir}: run `make gpu_check_data` first (on any machine, no "
              f"download), and carry data/gpu_check to the GPU machine", file=sys.stderr)
        return 1

    machine = describe_machine()
    if cpu:
        peak_note = "no GPU: MFU is not reported"
    else:
        peak = peak_flops_of(TrainConfig(), "cuda")
        peak_note = f"peak {peak / 1e12:,.1f} TFLOP/s bf16 dense" if peak else "peak FLOP/s unknown: no MFU"
    command = "make gpu_check" + (" DEVICE=cpu (the dry path, a tiny shape)" if cpu else "")
    header = (f"## GPU check: `{command}`\n\n{datetime.date.today().isoformat()}, {machine}; {peak_note}. "
              f"Regenerate with `{command}` (gpu_check.py).")
    sections, checks, stage_seconds = [], [], {}

    def write():
        write_atomically(out, report(header, sections, checks, stage_seconds))

    def stage(name):
        """True when there is time left to start this step; a skipped step is said so in the report."""
        if time.time() - start > args.budget_seconds:
            sections.append((name, f"skipped: {time.time() - start:.0f} s had passed (--budget_seconds "
                                   f"{args.budget_seconds:.0f})"))
            write()
            return False
        print(f"gpu_check: {name}", flush=True)
        return True

    def timed(name, began):
        stage_seconds[name] = time.time() - began
        write()

    if stage("bench_train.py: baseline and modern"):
        began = time.time()
        rows = [bench_config(os.path.join(REPO, "configs", f"{c}.py"), TINY if cpu else [], steps=10, warmup=3)
                for c in ("baseline", "modern")]
        note = f"`bench_train.py` rows{' at a tiny shape' if cpu else ''}: synthetic tokens, median of 10 steps after 3 warm-up."
        sections.append(("Throughput", throughput_table(rows, note)))
        timed("bench", began)

    runs = {}
    train_args = TINY_TRAIN if cpu else TRAIN
    for name, extra in [("plain", []), ("checkpointed", ["--activation_checkpointing=True"])]:
        title = "training, compiled" + (", activation checkpointing" if extra else "")
        if not stage(title):
            continue
        began = time.time()
        records, peak = train_run(train_args + extra, args.data_dir, os.path.join(args.work_dir, name))
        runs[name] = summarize(records, peak)
        timed(name, began)

    if runs:
        steps = max(max(r["losses"]) for r in runs.values())
        lines = ["| run | val loss, first → last | train loss at the end | tokens/s | MFU | MFU, masked half excluded "
                 "| first step (compile) s | peak memory GiB | compiled graphs |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, r in runs.items():
            lines.append(f"| {name} | {r['val_first']:.3f} → {r['val_last']:.3f} | {r['losses'][max(r['losses'])]:.3f} | "
                         f"{fmt(r['tok_per_s'], ',.0f')} | {fmt(r['mfu'], '.1%')} | {fmt(r['mfu_causal'], '.1%')} | "
                         f"{fmt(r['first_step_seconds'], '.1f')} | {fmt(r['peak_gib'], '.1f')} | "
                         f"{', '.join(map(str, r['compiled_graphs']))} |")
        args_text = " ".join(train_args)
        sections.append(("Training", f"`train.py configs/baseline.py {args_text}` on {args.data_dir}, {steps} steps; "
                                     f"tokens/s and MFU: the median logged interval; the first step's compile "
                                     f"may reuse Inductor's on-disk cache of the throughput step's graphs.\n\n" + "\n".join(lines)))
        plain = runs.get("plain")
        if plain:
            checks.append((f"the validation loss fell by at least {LOSS_FALL} ({plain['val_first']:.3f} → "
                           f"{plain['val_last']:.3f})", plain["val_first"] - plain["val_last"] >= LOSS_FALL))
        for name, r in runs.items():
            checks.append((f"{name}: no recompile after the first step (compiled graphs {r['compiled_graphs']})",
                           len(r["compiled_graphs"]) == 1))
        if len(runs) == 2:
            checkpointed = runs["checkpointed"]
            diff = max(abs(plain["losses"][s] - checkpointed["losses"][s]) for s in plain["losses"])
            checks.append((f"activation checkpointing: the same train losses (largest difference {diff:.4f}, "
                           f"at most {SAME_LOSS})", diff <= SAME_LOSS))
            if not cpu:
                checks.append((f"activation checkpointing: less peak memory ({checkpointed['peak_gib']:.1f} against "
                               f"{plain['peak_gib']:.1f} GiB)", checkpointed["peak_gib"] < plain["peak_gib"]))
        write()

    if "plain" in runs and stage("sample.py"):
        began = time.time()
        ckpt = os.path.join(args.work_dir, "plain", "ckpt.pt")
        result = subprocess.run([sys.executable, "sample.py", os.path.abspath(ckpt), "--prompt", "def ", "--max_new_tokens",
                                 "48", "--device", args.device], cwd=REPO, capture_output=True, text=True)
        print(result.stderr, end="", file=sys.stderr)
        sections.append(("Sample", f"`python sample.py {ckpt} --prompt 'def ' --max_new_tokens 48`:\n\n```\n"
                                   f"{result.stdout.strip()}\n```"))
        checks.append(("sample.py wrote a continuation from the checkpoint", result.returncode == 0 and len(result.stdout) > 4))
        timed("sample", began)

    if stage("speedrun: FlexAttention, compiled"):
        # on CUDA the masked attention is FlexAttention's, forward and backward: the CPU tests hold its forward to
        # SDPA's (torch 2.13 has no FlexAttention backward on the CPU); here the whole training step runs
        began = time.time()
        window = ["--attn_window=64", "--attn_window_start=8"] if cpu else []  # the tiny context's; else the config's
        records, peak = train_run(train_args + window + ["--max_steps=30", "--eval_interval=15", "--log_interval=5"],
                                  args.data_dir, os.path.join(args.work_dir, "speedrun"),
                                  config=os.path.join(REPO, "configs", "speedrun.py"))
        r = summarize(records, peak)
        sections.append(("Speedrun", f"`train.py configs/speedrun.py`, 30 steps as above: val loss {r['val_first']:.3f} → "
                                     f"{r['val_last']:.3f}, {fmt(r['tok_per_s'], ',.0f')} tokens/s, MFU "
                                     f"{fmt(r['mfu'], '.1%')}, first step {fmt(r['first_step_seconds'], '.1f')} s, "
                                     f"peak {fmt(r['peak_gib'], '.1f')} GiB"))
        checks.append((f"speedrun: the validation loss fell by at least {LOSS_FALL} ({r['val_first']:.3f} → "
                       f"{r['val_last']:.3f})", r["val_first"] - r["val_last"] >= LOSS_FALL))
        checks.append((f"speedrun: no recompile as its window grows (compiled graphs {r['compiled_graphs']})",
                       len(r["compiled_graphs"]) == 1))
        timed("speedrun", began)

    stage_seconds["total"] = time.time() - start
    write()
    print(report(header, sections, checks, stage_seconds))
    print(f"wrote {out}")
    return 0 if checks and all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
