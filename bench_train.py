"""
Training speed of every GPU config on synthetic tokens: nothing to download or prepare, so the first thing
to run on a freshly rented GPU, before paying for a whole run.

    make bench_gpu                                  # every GPU config, compiled, on this machine's GPU
    python bench_train.py configs/modern.py --steps 30
    python bench_train.py --tiny                    # the same code at a tiny shape on the CPU (what the tests run)
    python bench_train.py --smoke                   # every config at its real shape, one step on the CPU

Each config gets the model and optimizer that train.py builds and train.py's own train_step, fed batches of
random token ids. The first --warmup steps are timed apart (torch.compile compiles in the first one); then
--steps steps are timed one by one, the device synchronised after each, and the median is reported:
tokens/s, MFU both ways (nanoGPT's FLOPs, and with causal attention's masked half left out) against the GPU's
peak (by its name: model.gpu_peak_flops; or --peak_flops), peak GPU memory (on the CPU: the process's
peak resident memory so far), ms/step, compile seconds (the first step minus a median step), the loss of the
first step (about ln(50257) = 10.8 for an untrained model), and the config's whole token budget projected
at this speed: hours and dollars at its gpu_hourly_cost, on one GPU.
"""

import argparse
import datetime
import gc
import os
import resource
import statistics
import sys
import time

import torch

import train
from config import load_config
from plot import format_tokens

REPO = os.path.dirname(os.path.abspath(__file__))
GPU_CONFIGS = [os.path.join(REPO, "configs", f"{name}.py")
               for name in ("baseline", "increase_max_lr", "rotational_pos_emb", "swiglu", "modern", "speedrun")]
GPT2_VOCAB = 50257  # the ids a real shard holds; the padded rows of the embedding are never looked up
# a few million parameters on the CPU: the GPU configs' code paths (compile aside), in seconds
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=2", "--total_batch_size=256",
        "--device=cpu", "--dtype=float32", "--compile=False"]
# the real 124M shapes and context, one sequence per step, bf16 autocast as on the GPU: catches the shape,
# dtype and memory-layout bugs that tiny test models hide
SMOKE = ["--batch_size=1", "--device=cpu", "--dtype=bfloat16", "--compile=False"]


def smoke_overrides(path):
    """SMOKE for one config: a step of one sequence of the config's own context (1024 tokens, speedrun's 4096)."""
    return SMOKE + [f"--total_batch_size={load_config(path, []).block_size}"]


def bench_config(path, overrides=(), steps=20, warmup=3):
    """One config's row: {"config", "tok_per_s", "mfu", "mfu_causal", "peak_flops", "peak_memory_gib",
    "ms_per_step", "compile_seconds", "first_loss", "budget_hours", "budget_dollars", "budget_tokens"}. Whatever
    it built is freed before it returns (weights, optimizer state, compiled graphs, the CUDA allocator's cached
    blocks), so the next config's peak memory is its own and its compile is not the reuse of this one's graphs."""
    cfg = load_config(path, overrides)
    device = train.resolve_device(cfg.device, 0, False, torch.cuda.is_available())
    train.check_cpu_can_train(cfg, device)  # device "auto" without a GPU: refuse the 124M configs
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
    peak_flops = train.peak_flops_of(cfg, device)
    model = train.build_model(cfg).to(device)
    model.activation_checkpointing = cfg.activation_checkpointing
    optimizer = train.build_optimizer(model, cfg, device_type)
    for group in optimizer.param_groups:  # the peak learning rate: the steps update the weights as in a real run
        group["lr"] = train.learning_rate(cfg.warmup_steps, cfg) * group.get("lr_scale", 1.0)
    compiled = torch.compile(model) if cfg.compile else model
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

    def next_batch():  # as data.ShardLoader cuts a stretch of B*T+1 tokens
        tokens = torch.randint(0, GPT2_VOCAB, (cfg.batch_size * cfg.block_size + 1,), device=device)
        return tokens[:-1].view(cfg.batch_size, -1), tokens[1:].view(cfg.batch_size, -1)

    seconds, first_loss = [], None
    for _ in range(warmup + steps):
        start = time.time()
        loss, _ = train.train_step(compiled, optimizer, next_batch, cfg.total_batch_size // tokens_per_micro_step,
                                   device, autocast, cfg.grad_clip, ddp=False)
        train.synchronize(device)
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
            "mfu": model.estimate_mfu(tok_per_s, peak_flops) if peak_flops else None,
            "mfu_causal": model.estimate_mfu(tok_per_s, peak_flops, causal=True) if peak_flops else None,
            "peak_flops": peak_flops, "peak_memory_gib": peak_memory, "ms_per_step": step_seconds * 1000,
            "compile_seconds": seconds[0] - step_seconds if warmup and cfg.compile else None, "first_loss": first_loss,
            "budget_hours": budget_hours, "budget_dollars": budget_hours * cfg.gpu_hourly_cost,
            "budget_tokens": cfg.max_steps * cfg.total_batch_size}


def describe_machine():
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{train.describe_hardware('cpu', 1)}, torch {torch.__version__}"


def markdown(rows, note):
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="config files (default: the five GPU configs)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config, median reported (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included (default 3)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--tiny", action="store_true", help="a tiny shape on the CPU: the same code, in seconds")
    shape.add_argument("--smoke", action="store_true", help="the real shapes, one step each on the CPU, bf16 autocast "
                                                            "(a test of shapes and dtypes, not a speed)")
    parser.add_argument("--out", metavar="MD", help="also write the table to this markdown file")
    args, overrides = parser.parse_known_args(argv)
    if args.smoke:
        args.steps, args.warmup = 1, 0
    try:
        if args.steps < 1 or args.warmup < 0:
            raise ValueError("--steps must be at least 1 and --warmup at least 0")
        rows = []
        for path in args.configs or GPU_CONFIGS:
            shape = TINY if args.tiny else smoke_overrides(path) if args.smoke else []
            rows.append(bench_config(path, shape + overrides, args.steps, args.warmup))
            print(f"{rows[-1]['config']}: {rows[-1]['tok_per_s']:,.0f} tokens/s", flush=True)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shape_note = " at a tiny shape (--tiny)" if args.tiny else " at full shape, one step (--smoke)" if args.smoke else ""
    note = (f"`python bench_train.py{' --tiny' if args.tiny else ' --smoke' if args.smoke else ''}`{shape_note} on "
            f"{describe_machine()}, {datetime.date.today().isoformat()}: synthetic tokens, median of {args.steps} "
            f"step(s) after {args.warmup} warm-up; whole run = the config's max_steps at this speed on one GPU.")
    table = markdown(rows, note)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(table)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
