"""
Quantized inference for every GPT of model.py: int8 and int4 weights, in plain PyTorch.

    from multiple_choice import load_model
    from quantize import quantize
    model = quantize(load_model("out/quant_cpu/ckpt.pt"), "q8_0")   # a quantized copy: same forward, generate

Schemes (SCHEMES below). "Matrices" are the nn.Linear weights inside the blocks (attention c_attn, c_proj;
MLP c_fc, c_gate, c_proj) and the head lm_head; the position table, biases and norm gains stay in fp32.
- q8_0          llama.cpp's Q8_0 / llama2.c's runq.c: symmetric int8 in groups of 64 (q8_0-g32: 32) consecutive
                inputs, for weights and for each token's activations, with int32 dot products. This file is the
                executable specification of the C engine's int8 path (notes: INTERFACES.md "q8_0").

References: llama.cpp ggml-quants.c (block_q8_0: 32 int8 + one scale = max|x|/127), karpathy/llama2.c runq.c
(QuantizedTensor, quantize(), the grouped int8 matmul). No code copied; written from their descriptions.
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEMES = ("none", "q8_0", "q8_0-g32")


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


class Q8_0Linear(nn.Module):
    """An nn.Linear whose weight is q8_0 int8 in groups; bias in fp32."""

    def __init__(self, linear, group_size):
        super().__init__()
        self.group_size = group_size
        qweight, wscale = q8_0_quantize(linear.weight.detach(), group_size)
        self.register_buffer("qweight", qweight)  # (out, in) int8
        self.register_buffer("wscale", wscale)  # (out, in / group_size) fp32
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone())

    def forward(self, x):
        y = q8_0_matmul(x.reshape(-1, x.shape[-1]), self.qweight, self.wscale, self.group_size)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1).to(x.dtype)


class QuantizedEmbedding(nn.Module):
    """The token embedding of a tied head: a lookup into the head's quantized matrix, each row dequantized."""

    def __init__(self, head):
        super().__init__()
        self.head = [head]  # a list, so the head's tensors are not registered (and saved) twice

    def forward(self, idx):
        head = self.head[0]
        return q8_0_dequantize(head.qweight[idx], head.wscale[idx])


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
    model = copy.deepcopy(model)
    if scheme == "none":
        return model
    group_size = 32 if scheme == "q8_0-g32" else 64
    tied = model.transformer.wte.weight is model.lm_head.weight
    with torch.no_grad():
        for parent, name in block_linears(model):
            setattr(parent, name, Q8_0Linear(getattr(parent, name), group_size))
        model.lm_head = Q8_0Linear(model.lm_head, group_size)
        if tied:  # the embedding reads the head's int8 rows; an untied embedding stays fp32
            model.transformer.wte = QuantizedEmbedding(model.lm_head)
    return model.eval()
