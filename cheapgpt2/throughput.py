"""
Training throughput of a config on synthetic tokens: the model, optimizer and optimizer step that train.py
uses, timed step by step (measure/bench_train.py and measure/gpu_check.py report it).

    from cheapgpt2.throughput import TINY, bench_config, throughput_table
    row = bench_config("configs/baseline.py", TINY, steps=10, warmup=3)
"""

import gc
import os
import resource
import statistics
import time

import torch

from cheapgpt2.common import REPO, pick_device
from cheapgpt2.config import load_config
from cheapgpt2.estimate import estimate_mfu
from cheapgpt2.plotting import format_tokens
from cheapgpt2.tokenizer import GPT2_VOCAB_SIZE  # the ids a real shard holds
from cheapgpt2.training import (build_model, build_optimizer, check_cpu_can_train, learning_rate, peak_flops_of,
                                synchronize, train_step)

# a few million parameters on the CPU: the GPU configs' code paths (compile aside), in seconds
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=2", "--total_batch_size=256",
        "--device=cpu", "--dtype=float32", "--compile=False"]


def bench_config(path, overrides=(), steps=20, warmup=3):
    """One config's row: {"config", "tok_per_s", "mfu", "mfu_causal", "peak_flops", "peak_memory_gib",
    "ms_per_step", "compile_seconds", "first_loss", "budget_hours", "budget_dollars", "budget_tokens"}. Whatever
    it built is freed before it returns (weights, optimizer state, compiled graphs, the CUDA allocator's cached
    blocks), so the next config's peak memory is its own and its compile is not the reuse of this one's graphs."""
    cfg = load_config(path, overrides)
    device = pick_device(cfg.device)
    check_cpu_can_train(cfg, device)  # device "auto" without a GPU: refuse the 124M configs
    tokens_per_micro_step = cfg.batch_size * cfg.block_size
    if cfg.total_batch_size % tokens_per_micro_step:
        raise ValueError(f"{path}: total_batch_size={cfg.total_batch_size} is not a multiple of batch_size*block_size")
    try:
        return time_steps(cfg, path, device, steps, warmup)
    finally:
        free_memory(device)


def free_memory(device):
    """Drop what a finished model left: Dynamo's compiled graphs, the objects only they held, CUDA's cached blocks."""
    torch._dynamo.reset()
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def time_steps(cfg, path, device, steps, warmup):
    """bench_config's row, from warmup + steps optimizer steps of the model and optimizer train.py builds."""
    device_type = torch.device(device).type
    tokens_per_micro_step = cfg.batch_size * cfg.block_size
    torch.manual_seed(cfg.seed)
    if device_type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.cuda.reset_peak_memory_stats(device)
    peak_flops = peak_flops_of(cfg, device)
    model = build_model(cfg).to(device)
    model.activation_checkpointing = cfg.activation_checkpointing
    optimizer = build_optimizer(model, cfg, device_type)
    for group in optimizer.param_groups:  # the peak learning rate: the steps update the weights as in a real run
        group["lr"] = learning_rate(cfg.warmup_steps, cfg) * group.get("lr_scale", 1.0)
    compiled = torch.compile(model) if cfg.compile else model
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

    def next_batch():  # as data.ShardLoader cuts a stretch of B*T+1 tokens
        tokens = torch.randint(0, GPT2_VOCAB_SIZE, (cfg.batch_size * cfg.block_size + 1,), device=device)
        return tokens[:-1].view(cfg.batch_size, -1), tokens[1:].view(cfg.batch_size, -1)

    seconds, first_loss = [], None
    for _ in range(warmup + steps):
        start = time.time()
        loss, _ = train_step(compiled, optimizer, next_batch, cfg.total_batch_size // tokens_per_micro_step,
                                   device, autocast, cfg.grad_clip, ddp=False)
        synchronize(device)
        seconds.append(time.time() - start)
        first_loss = loss.item() if first_loss is None else first_loss
    step_seconds = statistics.median(seconds[warmup:])
    tok_per_s = cfg.total_batch_size / step_seconds
    if device_type == "cuda":
        peak_memory = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    budget_hours = cfg.max_steps * step_seconds / 3600
    return {"config": os.path.relpath(path, REPO), "tok_per_s": tok_per_s,
            "mfu": estimate_mfu(model, tok_per_s, peak_flops) if peak_flops else None,
            "mfu_causal": estimate_mfu(model, tok_per_s, peak_flops, causal=True) if peak_flops else None,
            "peak_flops": peak_flops, "peak_memory_gib": peak_memory, "ms_per_step": step_seconds * 1000,
            "compile_seconds": seconds[0] - step_seconds if warmup and cfg.compile else None, "first_loss": first_loss,
            "budget_hours": budget_hours, "budget_dollars": budget_hours * cfg.gpu_hourly_cost,
            "budget_tokens": cfg.max_steps * cfg.total_batch_size}


def throughput_table(rows, note):
    def cell(value, fmt):
        return "—" if value is None else fmt.format(value)

    peaks = {r["peak_flops"] for r in rows}
    peak_note = ("MFU: no peak FLOP/s is known for this device (set --peak_flops)." if peaks == {None} else
                 f"MFU against {', '.join(f'{p / 1e12:,.1f}' for p in peaks if p)} TFLOP/s bf16 dense; 6N + 12LTd FLOPs "
                 f"per token as nanoGPT counts (causal attention's masked half included), and 6N + 6LTd without it.")
    lines = [note, "", peak_note, "",
             "| config | tokens/s | MFU | MFU, masked half excluded | peak memory (GiB) | ms/step | compile (s) | first loss "
             "| whole run | its cost |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['config']}` | {r['tok_per_s']:,.0f} | {cell(r['mfu'], '{:.1%}')} | "
                     f"{cell(r['mfu_causal'], '{:.1%}')} | {r['peak_memory_gib']:.1f} | "
                     f"{r['ms_per_step']:,.1f} | {cell(r['compile_seconds'], '{:.1f}')} | {r['first_loss']:.3f} | "
                     f"{r['budget_hours']:,.2f} h for {format_tokens(r['budget_tokens'])} tokens | ${r['budget_dollars']:,.2f} |")
    return "\n".join(lines) + "\n"
