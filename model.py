"""
GPT-2 and the variants we train, in one file.

References:
1) OpenAI's GPT-2 (Radford et al. 2019) and its TensorFlow code: pre-LayerNorm blocks, tanh GELU,
   tied token embedding and output head, residual projections initialised with std 0.02/sqrt(2*n_layer).
2) Hugging Face transformers' GPT2LMHeadModel: the weight names we load in from_pretrained.
3) RoFormer (Su et al. 2021) for rotary position embeddings, in the "rotate half" layout of
   transformers' Llama; SwiGLU from Shazeer 2020 ("GLU Variants Improve Transformer").
4) The modern options, each as the NanoGPT speedrun (KellerJordan/modded-nanogpt, records of Oct-Nov 2024)
   and karpathy/nanochat use it: RMSNorm (Zhang & Sennrich 2019), QK-norm (Henry et al. 2020), ReLU^2
   (So et al. 2021, "Primer"), an untied head, zero-initialised output projections, tanh logit soft-capping
   (Gemma 2, Team et al. 2024).

    from model import GPT, GPTConfig
    model = GPT(GPTConfig(pos_emb="rope", mlp="swiglu"))
    model = GPT(GPTConfig(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True, tie_embeddings=False))
    model = GPT.from_pretrained("gpt2")            # or a directory saved by transformers
"""

import json
import math
import os
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn import functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

H100_BF16_PEAK_FLOPS = 989.5e12  # H100 SXM, dense bf16 tensor cores (NVIDIA H100 datasheet)
RMS_NORM_EPS = 1e-6  # Llama's; torch's default, the dtype's machine epsilon, would be 0.008 in bfloat16
EOT_TOKEN = 50256  # GPT-2's <|endoftext|>, which prepare_data.py puts before every document (doc_mask's boundary)


@dataclass
class GPTConfig:
    block_size: int = 1024  # context length in tokens
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64, for faster matmuls
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads per block; n_embd / n_head is the head size
    n_embd: int = 768  # width of the residual stream
    dropout: float = 0.0  # dropout probability (0 for pretraining on one pass of the data)
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2
    pos_emb: str = "learned"  # "learned": GPT-2's position table; "rope": rotary embeddings on q, k
    mlp: str = "gelu"  # "gelu": GPT-2's 4x MLP; "swiglu": gated SiLU MLP with the same parameter count; "relu2": 4x MLP, relu(x)^2
    rope_theta: float = 10000.0  # RoPE base frequency (RoFormer's)
    norm: str = "layernorm"  # "layernorm": GPT-2's; "rmsnorm": RMSNorm with a gain and no bias (Llama's)
    qk_norm: bool = False  # RMS-normalise each head's queries and keys (no gain) before attention
    tie_embeddings: bool = True  # False: the input embedding and the output head are separate matrices
    zero_init_proj: bool = False  # start the residual projections (and an untied head) at zero
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap); 0 leaves them as they are
    doc_mask: bool = False  # attention stays inside each document: no token attends across an <|endoftext|>
    attn_window: int = 0  # > 0: a token attends to the last attn_window positions only (itself included); 0: all
    value_embeds: bool = False  # ceil(n_layer/2) embedding tables mixed into the attention values, in U-net order
    unet_skips: bool = False  # the last n_layer//2 blocks add a learned multiple of the mirrored first blocks' outputs

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.pos_emb not in ("learned", "rope"):
            raise ValueError(f"GPTConfig: pos_emb must be 'learned' or 'rope', got {self.pos_emb!r}")
        if self.mlp not in ("gelu", "swiglu", "relu2"):
            raise ValueError(f"GPTConfig: mlp must be 'gelu', 'swiglu' or 'relu2', got {self.mlp!r}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"GPTConfig: norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.logit_softcap < 0:
            raise ValueError(f"GPTConfig: logit_softcap must be 0 (off) or positive, got {self.logit_softcap}")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError(f"GPTConfig: RoPE rotates pairs of dimensions, so the head size "
                             f"n_embd/n_head={self.n_embd // self.n_head} must be even")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.attn_window < 0:
            raise ValueError(f"GPTConfig: attn_window must be 0 (the whole context) or positive, got {self.attn_window}")

    @property
    def swiglu_hidden(self):
        # 2/3 of GELU's 4*n_embd keeps the parameter count (three matrices instead of two);
        # rounded up to a multiple of 64 for the GPU (2048 at n_embd=768).
        return 64 * math.ceil(8 * self.n_embd / 3 / 64)


def rope_cos_sin(head_size, block_size, theta):
    """cos and sin tables of shape (block_size, head_size) for rotary embeddings, in float32."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hs): the "rotate half" layout
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate x of shape (B, nh, T, hs): dimension i is paired with i + hs/2 (Llama's layout)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def make_norm(config):
    """The norm before each block's attention and MLP, and before the head: GPT-2's LayerNorm or RMSNorm."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=RMS_NORM_EPS)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qk_norm = config.qk_norm
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        if config.value_embeds:
            # how much of the block's own values and of its value embedding make the values: half and half at
            # the start, as modded-nanogpt (12/04/24) initialises them
            self.value_lambdas = nn.Parameter(torch.tensor([0.5, 0.5]))

    def forward(self, x, rope=None, cache=None, layer=0, mask=None, value_embed=None):
        """x (B, T, C). With a KVCache (inference): x holds the tokens at positions cache.length ... +T-1, their keys
        and values are stored in the cache's `layer` slot, and they attend to the cached positions before them.
        mask (B, 1, T, keys), from GPT.attention_mask: where a query may attend (None: every earlier position).
        value_embed (B, T, C): this layer's value embedding of the tokens, mixed into the values."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        if value_embed is not None:
            v = self.value_lambdas[0] * v + self.value_lambdas[1] * value_embed
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.qk_norm:
            # unit RMS per head bounds the attention logits by sqrt(hs), however large the weights grow;
            # before RoPE or after is the same, as a rotation keeps each head's norm
            q = F.rms_norm(q, (q.size(-1),), eps=RMS_NORM_EPS)
            k = F.rms_norm(k, (k.size(-1),), eps=RMS_NORM_EPS)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        dropout = self.dropout if self.training else 0.0
        if cache is None and mask is None:
            # flash attention on CUDA; the causal mask is applied inside the kernel
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif isinstance(mask, BlockMask):  # FlexAttention skips the blocks of scores the mask leaves out (CUDA)
            y = flex_attention(q, k, v, block_mask=mask)
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            start, end = cache.length, cache.length + T
            cache.k[layer, :, :, start:end] = k
            cache.v[layer, :, :, start:end] = v
            k, v = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]  # (B, nh, end, hs)
            # the new token i sits at position start + i and sees positions 0 ... start + i; one new token sees all
            if mask is None and T > 1:
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """GPT-2's MLP: Linear(4x), tanh-approximated GELU (as OpenAI's code), Linear back; mlp="relu2" squares a ReLU instead."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.relu2 = config.mlp == "relu2"

    def forward(self, x):
        h = self.c_fc(x)  # (B, T, 4C)
        h = F.relu(h).square() if self.relu2 else F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))


class SwiGLU(nn.Module):
    """c_proj(silu(c_gate(x)) * c_fc(x)): Llama's gate_proj, up_proj and down_proj."""

    def __init__(self, config):
        super().__init__()
        self.c_gate = nn.Linear(config.n_embd, config.swiglu_hidden, bias=config.bias)
        self.c_fc = nn.Linear(config.n_embd, config.swiglu_hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.swiglu_hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x)))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(self, x, rope=None, cache=None, layer=0, mask=None, value_embed=None):
        x = x + self.attn(self.ln_1(x), rope, cache, layer, mask, value_embed)
        x = x + self.mlp(self.ln_2(x))
        return x


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


class KVCache:
    """The keys and values of every layer for the tokens seen so far, so that generation runs each new token
    once instead of the whole context again. Positions 0 ... length-1 are filled; at most block_size."""

    def __init__(self, n_layer, batch_size, n_head, block_size, head_size, dtype=torch.float32, device="cpu"):
        shape = (n_layer, batch_size, n_head, block_size, head_size)  # (L, B, nh, block_size, hs)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.docs = torch.zeros(batch_size, block_size, dtype=torch.long, device=device)  # doc_mask: each position's document
        self.length = 0

    def reset(self):
        self.length = 0


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        if config.pos_emb == "learned":
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:
            # not persistent: derived from the config, so checkpoints don't carry them
            cos, sin = rope_cos_sin(config.n_embd // config.n_head, config.block_size, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if config.value_embeds:
            # one table per pair of mirrored layers: layer i and layer n_layer-1-i share table i (modded-nanogpt
            # 12/08/24's U-net order), so the first and the last layers see the tokens' own value vectors
            self.value_embeds = nn.ModuleList(nn.Embedding(config.vocab_size, config.n_embd)
                                              for _ in range((config.n_layer + 1) // 2))
        if config.unet_skips:
            # the outputs of the first n_layer//2 blocks are added into the inputs of the last n_layer//2, block i
            # into block n_layer-1-i, each times a learned weight that starts at 1 (modded-nanogpt 11/10/24)
            self.skip_weights = nn.Parameter(torch.ones(config.n_layer // 2))
        # the window a token attends within, as a tensor: train.py grows it during training without a recompile
        self.register_buffer("attn_window", torch.tensor(config.attn_window), persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # train.py's activation_checkpointing: keep only each block's input for the backward and recompute the
        # rest there (~1/3 more compute, a fraction of the memory). Not in the config: checkpoints don't carry it
        self.activation_checkpointing = False
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2

        self.apply(self._init_weights)
        # GPT-2 paper: scale the residual projections by 1/sqrt(N), N = 2 residual adds per layer
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if not config.tie_embeddings:
            # no longer the head, the input embedding starts at unit scale, like the normalised inputs of
            # the blocks: PyTorch's nn.Embedding default, kept by modded-nanogpt; nanochat uses std 1.0 too
            torch.nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=1.0)
        for table in getattr(self, "value_embeds", []):  # nn.Embedding's default, as modded-nanogpt keeps them
            torch.nn.init.normal_(table.weight, mean=0.0, std=1.0)
        if config.zero_init_proj:
            # modded-nanogpt (10/14/24 and 11/03/24 records): every block starts as the identity and an
            # untied head predicts the uniform distribution; the first steps grow them from zero
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight") or name == "lm_head.weight":  # a tied head is named wte: kept
                    torch.nn.init.zeros_(p)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"input has {T} tokens but the model's block_size is {self.config.block_size}; "
                             f"crop the input to the last {self.config.block_size} tokens")
        x, rope = self.embed(idx)
        x = self.run_blocks(self.transformer.drop(x), rope, self.attention_mask(idx), self.value_embeddings(idx))
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.head(x), None
        if type(getattr(self.lm_head, "weight", None)) in (nn.Parameter, torch.Tensor):
            # the loss without the (B, T, vocab_size) logits: at 64 x 1024 tokens they and their float32
            # soft-cap and log-softmax would be 13 GB each; the caller gets the loss only
            return None, head_loss(x.view(B * T, -1), self.lm_head.weight, targets.reshape(-1), self.config.logit_softcap)
        # a head that quantize.py replaced (no plain float weight to chunk): inference-sized inputs, plain cross-entropy
        logits = self.head(x).float()
        return None, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)

    def run_blocks(self, x, rope, mask, value_embeds, cache=None):
        """x (B, T, C) through every block, with the U-net skips where configured; cache: forward_cached's."""
        n_layer, skips = self.config.n_layer, []
        for layer, block in enumerate(self.transformer.h):
            mirrored = n_layer - 1 - layer  # the layer of the first half that this one of the second half mirrors
            if self.config.unet_skips and mirrored < n_layer // 2:
                x = x + self.skip_weights[mirrored] * skips[mirrored]
            value_embed = value_embeds[min(layer, mirrored)] if value_embeds else None
            if cache is None and self.activation_checkpointing and torch.is_grad_enabled():
                # non-reentrant: the variant torch.compile traces, where module-hook checkpointing broke
                # (pytorch/pytorch#113263); it also recomputes through FSDP2's hooks on the block
                x = torch.utils.checkpoint.checkpoint(block, x, rope, None, layer, mask, value_embed, use_reentrant=False)
            else:
                x = block(x, rope, cache, layer, mask, value_embed)
            if self.config.unet_skips and layer < n_layer // 2:
                skips.append(x)
        return x

    def value_embeddings(self, idx):
        """The value embedding of the tokens idx (B, T) from every table, or None without value_embeds."""
        return [table(idx) for table in self.value_embeds] if self.config.value_embeds else None

    def attention_mask(self, idx, start=0, cache=None):
        """Where each of the tokens idx (B, T), at positions start ... start+T-1, may attend: a (B, 1, T, start+T)
        boolean mask of the earlier positions inside its window and its document, or None when neither doc_mask
        nor attn_window is set (every earlier position: the kernels' own causal mask). cache: the document of
        each earlier position (forward_cached), which this call extends with idx's."""
        if not self.config.doc_mask and not self.config.attn_window:
            return None
        T = idx.size(1)
        if cache is None and self.uses_flex_attention(idx):
            return self.flex_block_mask(idx)
        query = torch.arange(start, start + T, device=idx.device)[:, None]  # (T, 1)
        key = torch.arange(start + T, device=idx.device)[None, :]  # (1, start+T)
        mask = (key <= query)[None, None]  # (1, 1, T, start+T)
        if self.config.attn_window:
            mask = mask & (query - key < self.attn_window)
        if self.config.doc_mask:
            # a document starts at its <|endoftext|>: the tokens' document numbers count the ones up to them
            earlier = cache.docs[:, start - 1:start] if cache is not None and start > 0 else 0
            docs = earlier + (idx == EOT_TOKEN).cumsum(dim=1)  # (B, T)
            if cache is not None:
                cache.docs[:, start:start + T] = docs
                docs_of_keys = cache.docs[:, :start + T]
            else:
                docs_of_keys = docs
            mask = mask & (docs[:, None, :, None] == docs_of_keys[:, None, None, :])
        return mask

    def uses_flex_attention(self, idx):
        """FlexAttention for the masked training forward on CUDA, where it skips the masked-out blocks of scores
        (modded-nanogpt 11/19/24); SDPA's boolean mask elsewhere (tests/test_speedrun.py holds one to the other)."""
        return idx.is_cuda and not (self.training and self.config.dropout > 0)  # FlexAttention has no dropout

    def flex_block_mask(self, idx):
        """attention_mask's mask for idx (B, T) from position 0, as FlexAttention's BlockMask."""
        B, T = idx.shape
        docs = (idx == EOT_TOKEN).cumsum(dim=1)
        window, doc_mask, windowed = self.attn_window, self.config.doc_mask, bool(self.config.attn_window)

        def allowed(b, h, q, k):
            keep = k <= q
            if windowed:
                keep = keep & (q - k < window)
            if doc_mask:
                keep = keep & (docs[b, q] == docs[b, k])
            return keep
        return create_block_mask(allowed, B, None, T, T, device=idx.device)

    def embed(self, idx, start=0):
        """(x, rope) for the tokens idx (B, T) at positions start ... start+T-1: their embeddings (B, T, C), plus
        the position table's rows with learned positions, or else the RoPE tables of those positions."""
        T = idx.size(1)
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.pos_emb == "learned":
            return x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device)), None  # (T, C) over B
        return x, (self.rope_cos[start:start + T].to(x.dtype), self.rope_sin[start:start + T].to(x.dtype))

    def head(self, x):
        """Logits (..., vocab_size) of the final normalised hidden states x (..., C), soft-capped if configured."""
        logits = self.lm_head(x)
        if self.config.logit_softcap > 0:
            # Gemma 2's soft cap: about the identity for small logits, never beyond +-cap. In float32, as
            # nanochat: tanh in bfloat16 would round the logits near the cap
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits.float() / cap)
        return logits

    def num_params(self):
        """Number of parameters, each tied tensor counted once (124,475,904 for the baseline; an untied head
        adds vocab_size * n_embd)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, causal=False):
        """Training FLOPs per token, PaLM paper appendix B: 6N for the matmuls plus 12*L*H*Q*T for attention
        (nanoGPT's count, which includes the masked upper half of causal attention's scores). causal=True leaves
        that half out, 6*L*H*Q*T: the FLOPs a causal kernel needs, as modded-nanogpt counts. With an attention
        window W < T each query is scored against W keys instead of T (W(1 - W/2T) of them unmasked). N leaves
        out the position table, an untied token embedding and the value embeddings (lookups, not matmuls); a
        tied token embedding counts once, as the head."""
        cfg = self.config
        lookups = self.transformer.wpe.weight.numel() if cfg.pos_emb == "learned" else 0
        if not cfg.tie_embeddings:
            lookups += self.transformer.wte.weight.numel()
        lookups += sum(table.weight.numel() for table in getattr(self, "value_embeds", []))
        n = self.num_params() - lookups
        # the keys each query is scored against: the context, or a shorter attention window (its final size)
        keys = cfg.attn_window if 0 < cfg.attn_window < cfg.block_size else cfg.block_size
        attention = 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * keys
        if causal:  # the masked share left out: half of the square without a window, W / 2T of it with one
            attention = attention * (1 - keys / (2 * cfg.block_size))
        return 6 * n + attention

    def estimate_mfu(self, tokens_per_second, peak_flops=H100_BF16_PEAK_FLOPS, causal=False):
        """Model FLOPs utilisation: achieved training FLOP/s as a fraction of the accelerator's peak."""
        return self.flops_per_token(causal) * tokens_per_second / peak_flops

    def configure_optimizer(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on 2-D weights (matmuls, embeddings) only, not on biases and norms."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # the fused kernel is one launch for all parameters; CUDA only
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == "cuda")

    def new_kv_cache(self, batch_size):
        """An empty KVCache for forward_cached, in the model's dtype and on its device."""
        cfg, weight = self.config, self.transformer.ln_f.weight  # not lm_head: quantize.py replaces it (no fp32 .weight)
        return KVCache(cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head,
                       dtype=weight.dtype, device=weight.device)

    def forward_cached(self, idx, cache):
        """Inference beside forward(): logits (B, T, vocab_size) of the T tokens idx (B, T), which continue the
        cache.length tokens the cache holds (positions cache.length ... cache.length+T-1); appends them to it."""
        B, T = idx.size()
        start = cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"the KV cache holds {start} tokens and {T} more would pass the model's "
                             f"block_size={self.config.block_size}; reset it and start from the last tokens")
        x, rope = self.embed(idx, start)
        mask = self.attention_mask(idx, start, cache)
        x = self.run_blocks(x, rope, mask, self.value_embeddings(idx), cache)
        cache.length += T
        return self.head(self.transformer.ln_f(x))  # (B, T, vocab_size)

    @torch.no_grad()
    def next_token_logits(self, idx, cache=None):
        """Logits (B, vocab_size) for the token after idx (B, T), conditioned on its last block_size tokens.
        cache=None runs the whole window. A cache must hold the first cache.length tokens of idx (or nothing):
        only the rest run. Past block_size the window slides, every position moves, so the cache is refilled
        with the window: exactly the no-cache result, at the no-cache cost for those tokens."""
        window = idx[:, -self.config.block_size:]
        if cache is None:
            return self(window)[0][:, -1, :]
        if idx.size(1) > self.config.block_size or cache.length >= idx.size(1):
            cache.reset()
        return self.forward_cached(window[:, cache.length:], cache)[:, -1, :]

    @torch.no_grad()
    def generate_tokens(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True):
        """Yield the max_new_tokens tokens that follow idx (B, T), one (B, 1) tensor per step: a prefill over
        the prompt, then one token per step against the KV cache. Options as sample_next_token."""
        cache = self.new_kv_cache(idx.size(0)) if use_cache else None
        for _ in range(max_new_tokens):
            idx_next = sample_next_token(self.next_token_logits(idx, cache), temperature, top_k, top_p)
            idx = torch.cat((idx, idx_next), dim=1)
            yield idx_next

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True):
        """idx (B, T) with max_new_tokens sampled tokens appended. temperature=0 picks the most likely token;
        use_cache=False reruns the whole window every step (same tokens, slower: for comparison)."""
        new = list(self.generate_tokens(idx, max_new_tokens, temperature, top_k, top_p, use_cache))
        return torch.cat([idx, *new], dim=1)

    @classmethod
    def from_pretrained(cls, name_or_dir):
        """GPT-2 weights from a Hugging Face model id ("gpt2", "gpt2-medium", ...; needs the network)
        or from a local directory that transformers saved (config.json + safetensors or .bin)."""
        model_dir = name_or_dir
        if not os.path.isdir(name_or_dir):
            from huggingface_hub import snapshot_download  # installed with `datasets`
            try:
                model_dir = snapshot_download(name_or_dir, allow_patterns=["config.json", "*.safetensors"])
            except Exception as e:
                raise ValueError(f"could not load {name_or_dir!r}: not a local directory, and downloading it "
                                 f"from Hugging Face failed ({type(e).__name__}); pass a directory saved by transformers") from None
        config_path = os.path.join(model_dir, "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{config_path} does not exist; pass a directory that transformers saved")
        try:
            with open(config_path, encoding="utf-8") as f:
                hf = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{config_path} is not valid JSON ({type(e).__name__}); save the model again with transformers") from None
        if not isinstance(hf, dict):
            raise ValueError(f"{config_path} is not a transformers config (a JSON object)")
        if hf.get("model_type") != "gpt2":
            raise ValueError(f"{model_dir} holds a {hf.get('model_type')!r} model; only GPT-2's architecture loads here")
        if hf.get("activation_function", "gelu_new") != "gelu_new" or hf.get("layer_norm_epsilon", 1e-5) != 1e-5:
            raise ValueError(f"{model_dir}: only GPT-2's tanh GELU (gelu_new) and layer_norm_epsilon=1e-5 are supported")
        missing = [key for key in ("n_positions", "vocab_size", "n_layer", "n_head", "n_embd") if not isinstance(hf.get(key), int)]
        if missing:
            raise ValueError(f"{config_path} has no integer {', '.join(missing)}; is it GPT-2's config.json?")
        config = GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                           n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True)
        model = cls(config)
        hf_state = load_hf_state_dict(model_dir)
        # transformers' Conv1D stores weights as (in, out); nn.Linear wants (out, in)
        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        ours = model.state_dict()
        for key in ours:
            if key == "lm_head.weight":
                continue  # tied to transformer.wte.weight
            if key not in hf_state:
                raise ValueError(f"{model_dir}: weight {key} is missing from the checkpoint")
            w = hf_state[key].t() if key.endswith(conv1d) else hf_state[key]
            if w.shape != ours[key].shape:
                raise ValueError(f"{model_dir}: weight {key} has shape {tuple(w.shape)}, expected {tuple(ours[key].shape)}")
            with torch.no_grad():
                ours[key].copy_(w)
        return model


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


def filter_logits(logits, top_k=None, top_p=None):
    """logits (B, vocab) with the tokens outside the top k, then outside the nucleus, set to -inf.
    top_k keeps the k largest (and any equal to the k-th). top_p keeps the smallest set of most likely tokens
    whose probabilities add up to at least top_p (Holtzman et al. 2019), so always the most likely one."""
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be a positive number of tokens, got {top_k}")
        kth_largest = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth_largest, -float("inf"))
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_p is not None and top_p < 1.0:  # 1.0 keeps all: the float cumsum could pass 1.0 early and drop the tail
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits.float(), dim=-1)
        before = probs.cumsum(dim=-1) - probs  # the probability of the more likely tokens before each one
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -float("inf"))
    return logits


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None):
    """The next token (B, 1) from logits (B, vocab): argmax at temperature 0, else a draw from
    softmax(logits / temperature) restricted by top_k and top_p. torch.manual_seed makes the draws repeat."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if temperature < 0:
        raise ValueError(f"temperature must be 0 (greedy) or positive, got {temperature}")
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


def load_hf_state_dict(model_dir):
    """A transformers GPT-2 state dict with every key under 'transformer.' (hub files of GPT2Model have no prefix)."""
    safetensors_path = os.path.join(model_dir, "model.safetensors")
    bin_path = os.path.join(model_dir, "pytorch_model.bin")
    if not os.path.exists(safetensors_path) and not os.path.exists(bin_path):
        raise FileNotFoundError(f"{model_dir} has neither model.safetensors nor pytorch_model.bin")
    path = safetensors_path if os.path.exists(safetensors_path) else bin_path
    try:
        if path == safetensors_path:
            from safetensors.torch import load_file
            state = load_file(safetensors_path)
        else:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors raises its own SafetensorError; torch.load several kinds
        raise ValueError(f"{path} is not a weights file we can read ({type(e).__name__}); damaged or incomplete? "
                         f"save or download the model again") from None
    return {k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k: v for k, v in state.items()}


def gpt_config_from_dict(d):
    """GPTConfig from a dict (a checkpoint's model config); unknown keys are an error, not ignored."""
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"model config has unknown fields {unknown}; was it written by a newer version of model.py?")
    return GPTConfig(**d)


def read_checkpoint(path, device="cpu"):
    """The dict of a ckpt.pt written by train.py; one clear error for a missing, unreadable or foreign file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one with `python train.py configs/NAME.py`")
    try:
        # weights_only: a checkpoint is tensors and plain Python values, never pickled code
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a checkpoint torch can read ({type(e).__name__}); "
                         f"pass the ckpt.pt that train.py wrote, or delete a damaged one") from None
    if not isinstance(checkpoint, dict) or not {"model", "model_config"} <= checkpoint.keys():
        raise ValueError(f"{path} is not a checkpoint written by train.py (it has no 'model' and 'model_config')")
    return checkpoint


def load_checkpoint(path, device="cpu"):
    """(model, checkpoint dict) from a ckpt.pt written by train.py."""
    checkpoint = read_checkpoint(path, device)
    model = GPT(gpt_config_from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device), checkpoint
