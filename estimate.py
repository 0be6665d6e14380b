"""
Knowing before paying: what a config needs per GPU and what its whole run costs, without a GPU.

    python estimate.py configs/gpt2_xl.py
    python estimate.py configs/gpt2_medium.py --gpus=1,8,16 --mfu=0.35
    python estimate.py --markdown configs/baseline.py configs/gpt2_xl.py   # one summary row per config (docs/scaling.md)
    python train.py configs/gpt2_large.py --dry_run          # the same table

Parameters and FLOPs per token come from the model built on the meta device (no memory). Activation
memory is measured, not guessed: one block, and a one-layer model, at the config's width run forward on the
CPU under bfloat16 autocast at two sequence lengths, and every tensor autograd keeps for the backward is
counted once (by its storage); the growth per token, times the micro-batch and the layers, is the estimate.
Flash attention keeps O(T) per token on the GPU as on the CPU, so the per-token slope carries over; the
CUDA kernels keep about what the CPU ones do (q, k, v, the output and the log-sum-exp per head).

Memory per GPU, in bytes, N parameters (Muon's matrices n_muon of them), n GPUs:
  ddp : params 4N, grads 4N, DDP's reduction buckets 4N (a second copy of the gradients), optimizer state
        (AdamW 8 per parameter; Muon 4 per matrix entry and AdamW's 8 for the rest), activations.
  fsdp: the float32 parameters, gradients and optimizer state divided by n, plus the bfloat16 copies
        gathered for compute (the root's embeddings and head, and two blocks: the one running and the one
        prefetched) and two blocks' unsharded gradients (bfloat16, then float32 for the reduction).
  The optimizer step needs, after the activations are freed, Muon's float32 updates and their bfloat16
  orthogonalised copies (10 bytes per matrix entry); the peak is the larger of the two phases.
A config fits when its peak stays under 90% of 80 GB: the rest goes to the CUDA context, NCCL's buffers and
the allocator's fragmentation.
"""

import argparse
import sys

import torch

import model as model_module
from config import load_config
from model import GPT, H100_BF16_PEAK_FLOPS, rope_cos_sin

GPU_MEMORY_BYTES = 80e9  # an H100 / A100 80 GB
USABLE_FRACTION = 0.9
DEFAULT_MFU = 0.4


def count_parameters(model_config):
    """{"total", "muon", "block", "root", "flops_per_token"} from the model on the meta device: every
    parameter; the blocks' matrices (Muon's); one block's parameters; those outside the blocks."""
    with torch.device("meta"):
        model = GPT(model_config)
    block = sum(p.numel() for p in model.transformer.h[0].parameters())
    muon = sum(p.numel() for p in model.transformer.h.parameters() if p.dim() == 2)
    total = model.num_params()
    return {"total": total, "muon": muon, "block": block, "root": total - block * model_config.n_layer,
            "flops_per_token": model.flops_per_token()}


def saved_for_backward_bytes(run, exclude=()):
    """Bytes of the distinct storages autograd saves for the backward while run() executes, leaving out the
    storages of `exclude` (the parameters: counted apart)."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def measure_activations(model_config, lengths=(64, 128)):
    """{"block_per_token", "block_fixed", "rest_per_token", "rest_fixed"}: bytes kept for the backward by one
    block, and by everything else (embeddings, final norm, the head's loss), as a slope per token and a fixed
    part (bfloat16 copies of the weights, the head's weight gradient), under bfloat16 autocast on the CPU."""
    torch.manual_seed(0)
    one_layer = model_config.__class__(**{**model_config.__dict__, "n_layer": 1, "block_size": max(lengths)})
    model = GPT(one_layer)
    block = model.transformer.h[0]
    params = list(model.parameters())
    head_size = model_config.n_embd // model_config.n_head
    cos, sin = rope_cos_sin(head_size, max(lengths), model_config.rope_theta)
    block_bytes, model_bytes = [], []
    # a real micro-batch (tens of thousands of tokens) takes head_loss's chunked path, which saves no logits;
    # these few tokens would take its one-chunk shortcut, which saves all of them: measure the chunked one
    chunk_rows, model_module.LOSS_CHUNK_ROWS = model_module.LOSS_CHUNK_ROWS, min(lengths) // 2
    try:
        for T in lengths:
            x = torch.randn(1, T, model_config.n_embd, requires_grad=True)
            rope = (cos[:T], sin[:T]) if model_config.pos_emb == "rope" else None
            idx = torch.zeros(1, T, dtype=torch.long)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                block_bytes.append(saved_for_backward_bytes(lambda: block(x, rope), params))
                model_bytes.append(saved_for_backward_bytes(lambda: model(idx, idx), params))
    finally:
        model_module.LOSS_CHUNK_ROWS = chunk_rows
    span = lengths[1] - lengths[0]
    block_slope = (block_bytes[1] - block_bytes[0]) / span
    model_slope = (model_bytes[1] - model_bytes[0]) / span
    block_fixed = block_bytes[0] - block_slope * lengths[0]
    return {"block_per_token": block_slope, "block_fixed": block_fixed,
            "rest_per_token": model_slope - block_slope,
            "rest_fixed": model_bytes[0] - model_slope * lengths[0] - block_fixed}


def activation_bytes(activations, n_layer, tokens, checkpointing):
    """Bytes kept for the backward over a micro-batch of `tokens` tokens per GPU. With activation checkpointing
    each block keeps only its input (activations["block_input_per_token"]: the float32 residual stream) and
    one block's activations exist again while it is recomputed in the backward."""
    rest = activations["rest_per_token"] * tokens + activations["rest_fixed"]
    one_block = activations["block_per_token"] * tokens + activations["block_fixed"]
    if checkpointing:
        return rest + n_layer * activations["block_input_per_token"] * tokens + one_block
    return rest + n_layer * one_block


def memory_per_gpu(sizes, activations, n_layer, tokens, optimizer, parallelism, gpus, checkpointing):
    """{component: bytes} on one GPU, and "peak": the static parts plus the larger of the activations and the
    optimizer step's temporaries (the formulas are in the module docstring)."""
    N, n_muon = sizes["total"], sizes["muon"] if optimizer == "muon" else 0
    optimizer_state = 4 * n_muon + 8 * (N - n_muon)
    step_temporaries = 10 * n_muon
    if parallelism == "ddp":
        memory = {"params": 4 * N, "grads": 4 * N, "ddp_buckets": 4 * N, "optimizer": optimizer_state}
    elif parallelism == "fsdp":
        memory = {"params": 4 * N / gpus + 2 * (sizes["root"] + 2 * sizes["block"]),
                  "grads": 4 * N / gpus + (2 + 4) * 2 * sizes["block"], "optimizer": optimizer_state / gpus}
    else:
        raise ValueError(f"parallelism must be 'ddp' or 'fsdp', got {parallelism!r}")
    memory["activations"] = activation_bytes(activations, n_layer, tokens, checkpointing)
    memory["peak"] = sum(memory.values()) - memory["activations"] + max(memory["activations"], step_temporaries)
    return memory


def estimate(cfg, gpus=(1, 8), mfu=None, activations=None):
    """One row per (parallelism, GPUs, activation checkpointing): memory per GPU, whether it fits, and the whole
    run's hours and dollars at the assumed MFU. cfg is a TrainConfig (or anything with its keys)."""
    mfu = mfu or getattr(cfg, "assumed_mfu", DEFAULT_MFU)
    model_config = cfg.model_config()
    sizes = count_parameters(model_config)
    if activations is None:
        activations = measure_activations(model_config)
    activations["block_input_per_token"] = 4 * model_config.n_embd  # the float32 residual stream
    tokens = cfg.batch_size * cfg.block_size  # one micro-batch, per GPU
    total_flops = sizes["flops_per_token"] * cfg.total_batch_size * cfg.max_steps
    rows = []
    for n in gpus:
        hours = total_flops / (n * (cfg.peak_flops or H100_BF16_PEAK_FLOPS) * mfu) / 3600  # H100s, unless set
        for parallelism in ("ddp", "fsdp"):
            for checkpointing in (False, True):
                memory = memory_per_gpu(sizes, activations, model_config.n_layer, tokens, cfg.optimizer,
                                        parallelism, n, checkpointing)
                rows.append({"parallelism": parallelism, "gpus": n, "activation_checkpointing": checkpointing,
                             "memory": memory, "fits": memory["peak"] <= USABLE_FRACTION * GPU_MEMORY_BYTES,
                             "hours": hours, "dollars": hours * n * cfg.gpu_hourly_cost})
    return {"sizes": sizes, "activations": activations, "tokens_per_micro_batch": tokens,
            "total_tokens": cfg.total_batch_size * cfg.max_steps, "mfu": mfu, "rows": rows}


def format_report(name, result):
    sizes = result["sizes"]
    lines = [f"{name}: {sizes['total'] / 1e6:,.0f}M parameters, {sizes['flops_per_token'] / 1e9:.2f} GFLOPs per "
             f"training token, {result['total_tokens'] / 1e9:.1f}B tokens, micro-batch "
             f"{result['tokens_per_micro_batch']:,} tokens per GPU, assumed MFU {result['mfu']:.0%}",
             f"{'parallelism':>11} {'GPUs':>4} {'act.ckpt':>8} {'params':>7} {'grads':>7} {'optim':>7} "
             f"{'activ.':>7} {'peak GB':>7} {'fits 80GB':>9} {'hours':>7} {'dollars':>9}"]
    for row in result["rows"]:
        m = {k: v / 1e9 for k, v in row["memory"].items()}
        lines.append(f"{row['parallelism']:>11} {row['gpus']:>4} {'yes' if row['activation_checkpointing'] else 'no':>8} "
                     f"{m['params']:7.1f} {m['grads'] + m.get('ddp_buckets', 0):7.1f} {m['optimizer']:7.1f} "
                     f"{m['activations']:7.1f} {m['peak']:7.1f} {'yes' if row['fits'] else 'NO':>9} "
                     f"{row['hours']:7.1f} {row['dollars']:9,.0f}")
    return "\n".join(lines)


def markdown_row(name, result, gpus):
    """One docs/scaling.md row: the peak per GPU on 1 GPU (ddp) and on `gpus` GPUs (fsdp, with and without activation
    checkpointing), and the run's hours and dollars on `gpus` GPUs."""
    rows = {(r["parallelism"], r["gpus"], r["activation_checkpointing"]): r for r in result["rows"]}
    one, sharded, checkpointed = rows[("ddp", 1, False)], rows[("fsdp", gpus, False)], rows[("fsdp", gpus, True)]
    peak = lambda r: f"{r['memory']['peak'] / 1e9:.0f}" + ("" if r["fits"] else " (no)")  # noqa: E731
    sizes = result["sizes"]
    return (f"| {name} | {sizes['total'] / 1e6:,.0f}M | {sizes['flops_per_token'] / 1e9:.2f} | "
            f"{result['total_tokens'] / 1e9:.1f}B | {result['tokens_per_micro_batch']:,} | {peak(one)} | {peak(sharded)} | "
            f"{peak(checkpointed)} | {sharded['hours']:.1f} | {sharded['dollars']:,.0f} |")


MARKDOWN_HEADER = ("| config | params | GFLOPs/token | tokens | micro-batch tokens/GPU | peak GB/GPU, 1 GPU ddp | "
                   "peak GB/GPU, {n} GPUs fsdp | same + act. ckpt | hours on {n} GPUs | $ on {n} GPUs |\n"
                   "|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Memory per GPU, fit in 80 GB, time and dollars of a config's "
                                                 "whole run, for DDP and FSDP, without a GPU.")
    parser.add_argument("config", nargs="+", help="config files from configs/, e.g. configs/gpt2_xl.py")
    parser.add_argument("--markdown", action="store_true",
                        help="one markdown summary row per config (1 GPU ddp; fsdp on the largest --gpus count)")
    parser.add_argument("--gpus", default="1,8", help="comma-separated GPU counts to tabulate (default 1,8)")
    parser.add_argument("--mfu", type=float, default=None,
                        help=f"assumed model FLOPs utilisation (default: the config's assumed_mfu, else {DEFAULT_MFU})")
    args, overrides = parser.parse_known_args(argv)
    try:
        gpus = [int(g) for g in args.gpus.split(",")]
        if any(g < 1 for g in gpus):
            raise ValueError
    except ValueError:
        print(f"error: --gpus takes positive integers separated by commas, got {args.gpus!r}", file=sys.stderr)
        return 1
    if args.mfu is not None and not 0 < args.mfu <= 1:
        print(f"error: --mfu must be in (0, 1], got {args.mfu}", file=sys.stderr)
        return 1
    try:
        configs = [(path, load_config(path, overrides)) for path in args.config]
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.markdown:
        gpus = sorted(set(gpus) | {1})
        print(MARKDOWN_HEADER.format(n=gpus[-1]))
    for path, cfg in configs:
        result = estimate(cfg, gpus, args.mfu)
        print(markdown_row(path, result, gpus[-1]) if args.markdown else format_report(path, result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
