"""
The training loss of the head: cross-entropy of the logits without ever holding all of them.

At 64 x 1024 tokens the (B, T, vocab_size) logits and their float32 soft-cap and log-softmax would be 13 GB
each; head_loss computes the same loss and gradients a chunk of rows at a time (GPT.forward calls it).
"""

import torch
from torch.nn import functional as F

LOSS_CHUNK_ROWS = 4096  # tokens per chunk of the head's loss: 4096 x 50304 float32 logits are 0.8 GB


def head_loss(h, weight, targets, softcap=0.0, chunk_rows=None):
    """Mean cross-entropy (targets of -1 ignored) of the head's logits h @ weight.T, soft-capped to
    softcap * tanh(logits / softcap) when softcap > 0, with the logits in float32 for the log-softmax.
    The same value and gradients as F.cross_entropy on the whole logits, but no more than chunk_rows rows
    of logits exist at once: the gradients of h and weight are computed chunk by chunk during the forward
    (the fused linear cross-entropy of Liger Kernel, Hsu et al. 2024, arXiv:2410.10989), so nothing of size
    (tokens, vocab_size) is kept for the backward. h is (N, C), weight (vocab_size, C), targets (N,)."""
    chunk_rows = chunk_rows or LOSS_CHUNK_ROWS
    if h.size(0) <= chunk_rows:
        # one chunk holds it all: nothing to save, and autograd's own kernels are faster (~8% of a CPU step of
        # the 4 x 128 demo model, whose head is most of its work; measured against nanoGPT's loop)
        logits = F.linear(h, weight).float()
        if softcap > 0:
            logits = softcap * torch.tanh(logits / softcap)
        return F.cross_entropy(logits, targets, ignore_index=-1)
    # under no_grad (evaluation) the Function still sees needs_input_grad, so the grad mode is passed in
    with_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return HeadLoss.apply(h, weight, targets, softcap, chunk_rows, with_grad)


def add_matmul_(out, a, b):
    """out += a @ b, the products summed into out's float32 inside the matmul: under bfloat16 autocast no rounded
    bfloat16 (vocab_size, C) product is written per chunk and then added (a rounding of 2^-9 each time).
    The bfloat16 operands are multiplied as float32: their 8-bit significands are exact in float32 and in TF32
    (11 bits), so this is a bfloat16 matmul with float32 accumulation, at TF32's rate on a GPU. Not cuBLAS's
    mixed-dtype matmul (addmm's out_dtype): torch.compile's Inductor cannot lower it in torch 2.13
    ("tuned_addmm() takes 3 positional arguments", pytorch/pytorch#163880), and training is compiled."""
    if a.dtype != out.dtype:
        a, b = a.to(out.dtype), b.to(out.dtype)
    return out.addmm_(a, b)


class HeadLoss(torch.autograd.Function):

    @staticmethod
    def forward(ctx, h, weight, targets, softcap, chunk_rows, with_grad):
        valid_count = (targets != -1).sum()
        loss_sum = torch.zeros((), device=h.device, dtype=torch.float32)
        grad_h = torch.zeros_like(h) if with_grad and ctx.needs_input_grad[0] else None
        # float32 sums over the chunks, whatever the weight's dtype (FSDP's bfloat16 copy)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if with_grad and ctx.needs_input_grad[1] else None
        for start in range(0, h.size(0), chunk_rows):
            h_chunk, target_chunk = h[start:start + chunk_rows], targets[start:start + chunk_rows]
            logits = F.linear(h_chunk, weight)  # (rows, vocab_size), in the autocast dtype where autocast is on
            z = logits.float()  # float32 even under bf16 autocast: the log-softmax over 50k classes needs it
            if softcap > 0:
                tanh = torch.tanh(z / softcap)
                z = softcap * tanh
            valid = target_chunk != -1
            safe_targets = target_chunk.clamp(min=0)[:, None]  # (rows, 1): an ignored row reads class 0, masked
            log_sum_exp = torch.logsumexp(z, dim=-1)  # (rows,)
            loss_sum += ((log_sum_exp - z.gather(1, safe_targets)[:, 0]) * valid).sum()
            if grad_h is None and grad_weight is None:
                continue
            # d(loss_sum)/dz = softmax(z) - onehot(target), per valid row; the 1/valid_count comes at the end
            grad_z = torch.exp(z - log_sum_exp[:, None])
            grad_z.scatter_add_(1, safe_targets, -torch.ones_like(safe_targets, dtype=grad_z.dtype))
            grad_z *= valid[:, None]
            if softcap > 0:
                grad_z *= 1 - tanh * tanh  # d(cap * tanh(u / cap))/du
            grad_logits = grad_z.to(logits.dtype)  # as autograd would: the gradient of the matmul's output dtype
            if grad_h is not None:
                grad_h[start:start + chunk_rows] = grad_logits @ weight.to(logits.dtype)
            if grad_weight is not None:
                add_matmul_(grad_weight, grad_logits.t(), h_chunk.to(logits.dtype))
        ctx.save_for_backward(grad_h, grad_weight, valid_count)
        ctx.weight_dtype = weight.dtype
        return loss_sum / valid_count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_weight, valid_count = ctx.saved_tensors
        scale = grad_loss / valid_count
        return (grad_h * scale if grad_h is not None else None,
                (grad_weight * scale).to(ctx.weight_dtype) if grad_weight is not None else None, None, None, None, None)
