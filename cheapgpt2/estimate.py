"""
Knowing before paying: what a config needs per GPU and what its whole run costs, without a GPU.

    python -m measure.estimate configs/gpt2_xl.py
    python -m measure.estimate configs/gpt2_medium.py --gpus=1,8,16 --mfu=0.35
    python -m measure.estimate --markdown configs/baseline.py configs/gpt2_xl.py   # one row per config (docs/scaling.md)
    python train.py configs/gpt2_large.py --dry_run          # the same report

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

import torch

from cheapgpt2 import head_loss as head_loss_module
from cheapgpt2.model import GPT, rope_cos_sin

H100_BF16_PEAK_FLOPS = 989.5e12  # H100 SXM, dense bf16 tensor cores (NVIDIA H100 datasheet)
GPU_MEMORY_BYTES = 80e9  # an H100 / A100 80 GB
USABLE_FRACTION = 0.9
DEFAULT_MFU = 0.4


def gpu_peak_flops(device_name):
    """Dense bf16 tensor-core peak FLOP/s of a GPU from its name (torch.cuda.get_device_name), or None when the
    name is not one of these. NVIDIA's datasheets (their sparse figures halved): H100 SXM ("NVIDIA H100 80GB
    HBM3") and H200 SXM 989.5 TFLOPS, H100 PCIe 756, A100 312. The NVL parts run at other clocks: unknown."""
    name = device_name.upper()
    if "NVL" in name:
        return None
    if "H100" in name:
        return 756e12 if "PCIE" in name else 989.5e12 if "HBM3" in name or "SXM" in name else None
    if "H200" in name:
        return 989.5e12
    if "A100" in name:
        return 312e12
    return None



def flops_per_token(model, causal=False):
    """Training FLOPs per token, PaLM paper appendix B: 6N for the matmuls plus 12*L*H*Q*T for attention
    (nanoGPT's count, which includes the masked upper half of causal attention's scores). causal=True leaves
    that half out, 6*L*H*Q*T: the FLOPs a causal kernel needs, as modded-nanogpt counts. With an attention
    window W < T each query is scored against W keys instead of T (W(1 - W/2T) of them unmasked). N leaves
    out the position table, an untied token embedding and the value embeddings (lookups, not matmuls); a
    tied token embedding counts once, as the head."""
    cfg = model.config
    lookups = model.transformer.wpe.weight.numel() if cfg.pos_emb == "learned" else 0
    if not cfg.tie_embeddings:
        lookups += model.transformer.wte.weight.numel()
    lookups += sum(table.weight.numel() for table in getattr(model, "value_embeds", []))
    n = model.num_params() - lookups
    # the keys each query is scored against: the context, or a shorter attention window (its final size)
    keys = cfg.attn_window if 0 < cfg.attn_window < cfg.block_size else cfg.block_size
    attention = 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * keys
    if causal:  # the masked share left out: half of the square without a window, W / 2T of it with one
        attention = attention * (1 - keys / (2 * cfg.block_size))
    return 6 * n + attention

def estimate_mfu(model, tokens_per_second, peak_flops=H100_BF16_PEAK_FLOPS, causal=False):
    """Model FLOPs utilisation: achieved training FLOP/s as a fraction of the accelerator's peak."""
    return flops_per_token(model, causal) * tokens_per_second / peak_flops


def count_parameters(model_config):
    """{"total", "muon", "block", "root", "flops_per_token"} from the model on the meta device: every
    parameter; the blocks' matrices (Muon's); one block's parameters; those outside the blocks."""
    with torch.device("meta"):
        model = GPT(model_config)
    block = sum(p.numel() for p in model.transformer.h[0].parameters())
    muon = sum(p.numel() for p in model.transformer.h.parameters() if p.dim() == 2)
    total = model.num_params()
    return {"total": total, "muon": muon, "block": block, "root": total - block * model_config.n_layer,
            "flops_per_token": flops_per_token(model)}


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
    chunk_rows, head_loss_module.LOSS_CHUNK_ROWS = head_loss_module.LOSS_CHUNK_ROWS, min(lengths) // 2
    try:
        for T in lengths:
            x = torch.randn(1, T, model_config.n_embd, requires_grad=True)
            rope = (cos[:T], sin[:T]) if model_config.pos_emb == "rope" else None
            idx = torch.zeros(1, T, dtype=torch.long)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                block_bytes.append(saved_for_backward_bytes(lambda: block(x, rope), params))
                model_bytes.append(saved_for_backward_bytes(lambda: model(idx, idx), params))
    finally:
        head_loss_module.LOSS_CHUNK_ROWS = chunk_rows
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
