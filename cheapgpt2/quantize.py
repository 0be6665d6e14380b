"""
Quantized inference for every GPT of model.py: int8 and int4 weights, in plain PyTorch.

    from cheapgpt2.checkpoint import load_model
    from cheapgpt2.quantize import quantize
    model = quantize(load_model("out/quant_cpu/ckpt.pt"), "q8_0")   # a quantized copy: same forward, generate
    python -m measure.bench_inference out/quant_cpu/ckpt.pt                 # every scheme: quality, speed, memory

"Matrices" are the nn.Linear weights inside the blocks (attention c_attn, c_proj; MLP c_fc, c_gate, c_proj) and
the head lm_head; the position table, biases and norm gains stay in fp32. The schemes (SCHEMES below):
- int8wo            int8 weights, one scale per output channel; activations in fp32 (A16W8; torch's CPU kernel
                    _weight_int8pack_mm when decoding). An untied token embedding: int8, one scale per row.
- int8dq            int8 weights per output channel and int8 activations with one scale per token, computed on
                    the fly (W8A8, SmoothQuant's "per-token dynamic"); int8 x int8 -> int32 matmuls.
- int8dq-pertensor  the same with one activation scale for the whole input: for comparison only. A few tokens
                    carry activations far larger than the rest ("massive activations", Sun et al. 2024, e.g. on
                    GPT-2's first token); one scale for all then leaves the other tokens a handful of levels.
- int4wo-g32/64/128 4-bit weights in groups of 32/64/128 inputs, asymmetric (a scale and a zero per group),
                    activations in fp32; the head and an untied embedding in int8 per channel (int4 there costs
                    the most quality: measured in bench_inference). torch's CPU kernel _weight_int4pack_mm_for_cpu.
- q8_0              llama.cpp's Q8_0 / llama2.c's runq.c: symmetric int8 in groups of 64 (q8_0-g32: 32) consecutive
                    inputs, for weights and for each token's activations, with int32 dot products. This file is the
                    executable specification of the C engine's int8 path. An untied
                    token embedding stays fp32; a tied one reads the head's int8 rows.
- q4_0              llama.cpp's Q4_0 for the blocks' matrices: 4-bit weights in groups of 32, w = d * (q - 8) with d an
                    fp16 number, so that a GGUF Q4_0 holds the same values; activations and the product as q8_0-g32
                    (int8 per token in groups of 32, int32 dot products). The head (and a tied embedding, which reads
                    its rows) stays q8_0-g32, as llama.cpp keeps a tied embedding at 6 bits: 4 bits there cost the
                    most quality (q4_0-head: measured in media/bench_inference.md). The C engine's q4_0 path.
- bf16              the matrices rounded to bfloat16 (to nearest, ties to even), the products in fp32 on fp32
                    activations: the C engine's bf16 path. An untied token embedding stays fp32.
- torchao-int8wo, torchao-int8dq: the same two schemes through torchao's quantize_ (optional; pinned in
                    requirements-dev.txt), kept to compare: on the CPU they run, but slower than the above.

References: llama.cpp ggml-quants.c (block_q8_0: 32 int8 + one scale = max|x|/127), karpathy/llama2.c runq.c
(QuantizedTensor, quantize(), the grouped int8 matmul), SmoothQuant (Xiao et al. 2022) and LLM.int8() (Dettmers et
al. 2022) on activation outliers, gpt-fast/torchao's int4 layout (w = (q - 8) * scale + zero). No code copied.
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEMES = ("none", "int8wo", "int8dq", "int8dq-pertensor", "int4wo-g32", "int4wo-g64", "int4wo-g128", "q8_0", "q8_0-g32",
           "q4_0", "q4_0-head", "bf16", "torchao-int8wo", "torchao-int8dq")
Q4_0_GROUP = 32  # llama.cpp's QK4_0
TORCHAO_VERSION = "0.18.0"  # the version checked with torch 2.13.0 (requirements-dev.txt)


# -----------------------------------------------------------------------------
# q8_0: symmetric int8 in groups, for weights and activations alike

def q8_0_quantize(t, group_size):
    """t's last dimension cut into groups of group_size: (int8 values of t's shape, fp32 scales (..., n_groups)).
    Per group scale = max|t| / 127 and q = round-half-even(t / scale) in [-127, 127]; an all-zero group gets
    scale 0 and q = 0."""
    *lead, n = t.shape
    if n % group_size != 0:
        raise ValueError(f"q8_0: a row of {n} values does not split into groups of {group_size}; "
                         f"use a group size that divides it (32 or 64)")
    groups = t.float().reshape(*lead, n // group_size, group_size)
    scale = groups.abs().amax(dim=-1) / 127
    safe_scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # its group is all zeros: q = 0
    q = torch.round(groups / safe_scale[..., None]).clamp(-127, 127)  # torch.round: half to even, as C's rintf
    return q.to(torch.int8).reshape(t.shape), scale


def q8_0_dequantize(q, scale):
    """The fp32 values q8_0_quantize's (q, scale) stand for."""
    *lead, n = q.shape
    group_size = n // scale.shape[-1]
    return (q.float().reshape(*lead, -1, group_size) * scale[..., None]).reshape(q.shape)


def q8_0_matmul(x, qweight, wscale, group_size):
    """y = x @ W.T in q8_0: x (N, in) fp32 is quantized per token in groups; qweight (out, in) int8, wscale (out, groups).
    y[n, o] = sum over groups g, in order, of (int32 dot of the group's int8 values) * wscale[o, g] * xscale[n, g]."""
    qx, xscale = q8_0_quantize(x, group_size)  # (N, in) int8, (N, groups)
    y = torch.zeros(x.shape[0], qweight.shape[0], device=x.device)  # (N, out) fp32
    for g in range(wscale.shape[1]):
        cols = slice(g * group_size, (g + 1) * group_size)
        # int8 x int8 -> int32 matmul (oneDNN on the CPU): the exact integer dot products, as the C engine's
        dot = torch._int_mm(qx[:, cols], qweight[:, cols].t())  # (N, out) int32
        y += dot.float() * wscale[:, g] * xscale[:, g, None]
    return y


def q4_0_quantize(t, group_size=Q4_0_GROUP):
    """llama.cpp's Q4_0 (ggml-quants.c, quantize_row_q4_0_ref) of t's last dimension in groups of 32: (int8 values
    q - 8 in [-8, 7] of t's shape, fp32 scales (..., n_groups) that are fp16 numbers). Per group: m = the value of
    the largest magnitude (the first such), d = m / -8, q = min(15, floor(t / d + 8.5)) with 1/d in fp32, and the
    scale is d rounded to fp16: t ~ d16 * (q - 8). An all-zero group gets d = 0 and q = 8."""
    *lead, n = t.shape
    if n % group_size != 0:
        raise ValueError(f"q4_0: a row of {n} values does not split into groups of {group_size}")
    groups = t.float().reshape(*lead, n // group_size, group_size)
    largest = groups.gather(-1, groups.abs().argmax(dim=-1, keepdim=True))[..., 0]  # argmax: the first maximum
    d = largest / -8
    inverse = torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))
    q = torch.floor(groups * inverse[..., None] + 8.5).clamp(max=15)  # llama.cpp: MIN(15, (int8_t)(x * id + 8.5f))
    return (q - 8).to(torch.int8).reshape(t.shape), d.half().float()


def q4_0_pack(q):
    """q4_0_quantize's values (rows, cols) as the bytes of c/FORMAT.md and of a GGUF Q4_0 block: per group of 32,
    16 bytes, byte j holding value j + 8 in its low nibble and value j + 16 + 8 in its high one. (rows, cols/2) uint8."""
    rows, cols = q.shape
    unsigned = (q.to(torch.int16) + 8).to(torch.uint8).reshape(rows, cols // Q4_0_GROUP, 2, Q4_0_GROUP // 2)
    return (unsigned[:, :, 0] | (unsigned[:, :, 1] << 4)).reshape(rows, cols // 2)


class Q8_0Linear(nn.Module):
    """An nn.Linear whose weight is int8 in groups with one fp32 scale each: q8_0's, or q4_0's (values -8..7 whose
    scales are fp16 numbers); activations in q8_0 groups of the same size either way. Bias in fp32."""

    def __init__(self, linear, group_size, weights="q8_0"):
        super().__init__()
        self.group_size = group_size
        quantize_weights = q4_0_quantize if weights == "q4_0" else q8_0_quantize
        qweight, wscale = quantize_weights(linear.weight.detach(), group_size)
        self.register_buffer("qweight", qweight)  # (out, in) int8
        self.register_buffer("wscale", wscale)  # (out, in / group_size) fp32
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone())

    def forward(self, x):
        y = q8_0_matmul(x.reshape(-1, x.shape[-1]), self.qweight, self.wscale, self.group_size)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1).to(x.dtype)


    def dequantize_rows(self, idx):
        return q8_0_dequantize(self.qweight[idx], self.wscale[idx])


class BF16Linear(nn.Module):
    """An nn.Linear whose weight is rounded to bfloat16 (to nearest, ties to even); the product in fp32."""

    def __init__(self, linear):
        super().__init__()
        # not named weight: GPT.forward takes a head with a float .weight for its chunked loss
        self.register_buffer("bf16_weight", linear.weight.detach().to(torch.bfloat16))  # (out, in)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone())

    def forward(self, x):
        return F.linear(x.float(), self.bf16_weight.float(), self.bias).to(x.dtype)

    def dequantize_rows(self, idx):
        return self.bf16_weight[idx].float()


# -----------------------------------------------------------------------------
# int8 per output channel: weight-only (int8wo) and with dynamic int8 activations (int8dq)

class Int8Linear(nn.Module):
    """An nn.Linear with int8 weights, one fp32 scale per output channel (q8_0 with one group per row).
    activations: None (fp32, A16W8), "token" (int8, a scale per token) or "tensor" (int8, one scale per call)."""

    def __init__(self, linear, activations=None):
        super().__init__()
        self.activations = activations
        qweight, wscale = q8_0_quantize(linear.weight.detach(), linear.in_features)
        self.register_buffer("qweight", qweight)  # (out, in) int8
        self.register_buffer("wscale", wscale[:, 0])  # (out,) fp32
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone())

    def forward(self, x):
        x2 = x.reshape(-1, x.shape[-1]).float()  # (N, in)
        if self.activations is None and x2.shape[0] <= 16:  # decoding: torch's int8-weight kernel
            y = torch._weight_int8pack_mm(x2, self.qweight, self.wscale)  # x2 @ (qweight * wscale).T
        elif self.activations is None:  # many tokens: there that kernel is far slower than dequantizing (torch 2.13, CPU)
            y = F.linear(x2, self.qweight.float()) * self.wscale
        else:
            if self.activations == "token":
                qx, xscale = q8_0_quantize(x2, x2.shape[1])  # (N, in) int8, (N, 1)
            else:
                qx, xscale = q8_0_quantize(x2.reshape(1, -1), x2.numel())  # one scale for every token
                qx = qx.reshape(x2.shape)
            # int32 accumulation: 127 * 127 * in_features stays below 2**31 up to 133k inputs
            y = torch._int_mm(qx, self.qweight.t()).float() * xscale.reshape(-1, 1) * self.wscale
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1).to(x.dtype)

    def dequantize_rows(self, idx):
        return self.qweight[idx].float() * self.wscale[idx, None]


class Int8Embedding(nn.Module):
    """An untied token embedding in int8, one fp32 scale per row (per token id)."""

    def __init__(self, embedding):
        super().__init__()
        qweight, wscale = q8_0_quantize(embedding.weight.detach(), embedding.embedding_dim)
        self.register_buffer("qweight", qweight)  # (vocab, n_embd) int8
        self.register_buffer("wscale", wscale)  # (vocab, 1) fp32

    def forward(self, idx):
        return self.qweight[idx].float() * self.wscale[idx]


# -----------------------------------------------------------------------------
# int4 weight-only in groups

def int4_quantize(w, group_size):
    """w (out, in) cut into groups of group_size inputs: (q in 0..15 as uint8 (out, in), scale, zero (out, groups)),
    asymmetric: q = round((w - min) / scale) with scale = (max - min) / 15, and w ~ (q - 8) * scale + zero."""
    out_features, in_features = w.shape
    if in_features % group_size != 0:
        raise ValueError(f"int4: a row of {in_features} values does not split into groups of {group_size}; "
                         f"use a group size that divides it (32, 64 or 128)")
    groups = w.float().reshape(out_features, -1, group_size)  # (out, groups, group_size)
    low, high = groups.amin(-1), groups.amax(-1)
    scale = (high - low) / 15
    safe_scale = torch.where(scale == 0, torch.ones_like(scale), scale)  # a constant group: q = 0, w = zero - 8 * 0
    q = torch.round((groups - low[..., None]) / safe_scale[..., None]).clamp(0, 15)
    zero = low + 8 * scale  # the value q = 8 stands for: the layout of torch's int4 CPU kernel
    return q.to(torch.uint8).reshape(w.shape), scale, zero


def int4_dequantize(q, scale, zero):
    out_features, in_features = q.shape
    groups = q.float().reshape(out_features, scale.shape[1], -1)
    return ((groups - 8) * scale[..., None] + zero[..., None]).reshape(q.shape)


class Int4Linear(nn.Module):
    """An nn.Linear with 4-bit weights in groups (two per byte, packed for torch's CPU kernel); bias in fp32."""

    def __init__(self, linear, group_size):
        super().__init__()
        if linear.out_features % 16 != 0:
            raise ValueError(f"int4: torch's CPU kernel needs a multiple of 16 output features, not {linear.out_features}")
        self.group_size = group_size
        q, scale, zero = int4_quantize(linear.weight.detach(), group_size)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.int(), 1))  # (out, in/2) uint8
        self.register_buffer("scale_and_zero", torch.stack([scale.t(), zero.t()], dim=-1).contiguous())  # (groups, out, 2)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone())

    def forward(self, x):
        x2 = x.reshape(-1, x.shape[-1]).float()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group_size, self.scale_and_zero)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1).to(x.dtype)


# -----------------------------------------------------------------------------
# torchao's quantize_ (optional): the same int8 schemes through its tensor subclasses

def torchao_config(scheme):
    try:
        import torchao.quantization as ao
    except ImportError:
        raise ValueError(f"scheme {scheme} needs torchao: pip install torchao=={TORCHAO_VERSION} "
                         f"(or use {scheme.removeprefix('torchao-')}, the same scheme in plain PyTorch)") from None
    if scheme == "torchao-int8wo":
        return ao.Int8WeightOnlyConfig()
    return ao.Int8DynamicActivationInt8WeightConfig()


class QuantizedEmbedding(nn.Module):
    """The token embedding of a tied head: a lookup into the head's quantized matrix, each row dequantized."""

    def __init__(self, head):
        super().__init__()
        self.head = [head]  # a list, so the head's tensors are not registered (and saved) twice

    def forward(self, idx):
        return self.head[0].dequantize_rows(idx)


# -----------------------------------------------------------------------------
# quantize(): the one entry

def block_linears(model):
    """(parent module, attribute name) of every nn.Linear inside the blocks."""
    return [(parent, name) for block in model.transformer.h for parent in block.modules()
            for name, child in parent.named_children() if isinstance(child, nn.Linear)]


def quantize(model, scheme):
    """A quantized copy of model (a model.GPT; the original is left as it is), usable like it: forward, generate.
    scheme: one of SCHEMES. Raises ValueError with one clear sentence for an unknown scheme or unsuited shapes."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    config = torchao_config(scheme) if scheme.startswith("torchao-") else None  # fails before any copying
    model = copy.deepcopy(model).eval()
    if scheme == "none":
        return model
    tied = model.transformer.wte.weight is model.lm_head.weight
    if config is not None:
        if tied:  # torchao replaces the head's weight: the embedding keeps an fp32 copy of it
            model.transformer.wte.weight = nn.Parameter(model.lm_head.weight.detach().clone())
        from torchao.quantization import quantize_
        quantize_(model, config, filter_fn=lambda module, name: isinstance(module, nn.Linear))
        return model
    if scheme.startswith("q8_0"):
        group_size = 32 if scheme == "q8_0-g32" else 64
        make_linear = make_head = lambda linear: Q8_0Linear(linear, group_size)
    elif scheme.startswith("q4_0"):
        make_linear = lambda linear: Q8_0Linear(linear, Q4_0_GROUP, weights="q4_0")
        make_head = make_linear if scheme == "q4_0-head" else lambda linear: Q8_0Linear(linear, Q4_0_GROUP)
    elif scheme == "bf16":
        make_linear = make_head = BF16Linear
    elif scheme.startswith("int4wo"):
        group_size = int(scheme.removeprefix("int4wo-g"))
        make_linear = lambda linear: Int4Linear(linear, group_size)
        make_head = Int8Linear
    else:
        activations = {"int8wo": None, "int8dq": "token", "int8dq-pertensor": "tensor"}[scheme]
        make_linear = make_head = lambda linear: Int8Linear(linear, activations)
    with torch.no_grad():
        for parent, name in block_linears(model):
            setattr(parent, name, make_linear(getattr(parent, name)))
        model.lm_head = make_head(model.lm_head)
        if tied:  # the embedding reads the head's quantized rows
            model.transformer.wte = QuantizedEmbedding(model.lm_head)
        elif not scheme.startswith(("q8_0", "q4_0", "bf16")):  # the C engine's types keep it in fp32 (c/FORMAT.md)
            model.transformer.wte = Int8Embedding(model.transformer.wte)
    return model
