"""
GPT-2 and the variants we train: the model and its forward pass.

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

    from cheapgpt2.model import GPT, GPTConfig
    model = GPT(GPTConfig(pos_emb="rope", mlp="swiglu"))
    model = GPT(GPTConfig(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True, tie_embeddings=False))

Beside it: head_loss.py (the training loss without all the logits), generate.py (KV-cache generation and
sampling), checkpoint.py and hf.py (loading), estimate.py (FLOPs and MFU), training.py (the optimizers).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn import functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from cheapgpt2.head_loss import head_loss
# <|endoftext|>, which prepare_data.py puts before every document (doc_mask's boundary); the tokens the tokenizer has
from cheapgpt2.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE

RMS_NORM_EPS = 1e-6  # Llama's; torch's default, the dtype's machine epsilon, would be 0.008 in bfloat16


def log_probs(logits):
    """log-softmax over the last dimension, in float32, as logits - logsumexp(logits). torch 2.13's CPU log_softmax
    was off float64 by 1.1e-4 in every entry of a row of make demo's model (the same offset throughout, though the
    float32 sum of the exponentials was right to 1e-7), where this is within 1e-6, as c/gpt-server's double sum is:
    1e-4 is what the server and in-process scores are held to. The padding rows' -inf stay -inf."""
    logits = logits.float()
    return logits - logits.logsumexp(dim=-1, keepdim=True)


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


# ----------------------------------------------------------------------------------------------------
# where each token may attend

def attention_mask(model, idx, start=0, cache=None):
    """Where each of the tokens idx (B, T), at positions start ... start+T-1, may attend: a (B, 1, T, start+T)
    boolean mask of the earlier positions inside its window and its document, or None when neither doc_mask
    nor attn_window is set (every earlier position: the kernels' own causal mask). cache: the document of
    each earlier position (forward_cached), which this call extends with idx's."""
    if not model.config.doc_mask and not model.config.attn_window:
        return None
    T = idx.size(1)
    if cache is None and uses_flex_attention(model, idx):
        return flex_block_mask(model, idx)
    query = torch.arange(start, start + T, device=idx.device)[:, None]  # (T, 1)
    key = torch.arange(start + T, device=idx.device)[None, :]  # (1, start+T)
    mask = (key <= query)[None, None]  # (1, 1, T, start+T)
    if model.config.attn_window:
        mask = mask & (query - key < model.attn_window)
    if model.config.doc_mask:
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

def uses_flex_attention(model, idx):
    """FlexAttention for the masked training forward on CUDA, where it skips the masked-out blocks of scores
    (modded-nanogpt 11/19/24); SDPA's boolean mask elsewhere (tests/test_speedrun.py holds one to the other)."""
    return idx.is_cuda and not (model.training and model.config.dropout > 0)  # FlexAttention has no dropout

def flex_block_mask(model, idx):
    """attention_mask's mask for idx (B, T) from position 0, as FlexAttention's BlockMask."""
    B, T = idx.shape
    docs = (idx == EOT_TOKEN).cumsum(dim=1)
    window, doc_mask, windowed = model.attn_window, model.config.doc_mask, bool(model.config.attn_window)

    def allowed(b, h, q, k):
        keep = k <= q
        if windowed:
            keep = keep & (q - k < window)
        if doc_mask:
            keep = keep & (docs[b, q] == docs[b, k])
        return keep
    return create_block_mask(allowed, B, None, T, T, device=idx.device)


# ----------------------------------------------------------------------------------------------------
# the model

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
        x = self.run_blocks(self.transformer.drop(x), rope, attention_mask(self, idx), self.value_embeddings(idx))
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

    def embed(self, idx, start=0):
        """(x, rope) for the tokens idx (B, T) at positions start ... start+T-1: their embeddings (B, T, C), plus
        the position table's rows with learned positions, or else the RoPE tables of those positions."""
        T = idx.size(1)
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.pos_emb == "learned":
            return x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device)), None  # (T, C) over B
        return x, (self.rope_cos[start:start + T].to(x.dtype), self.rope_sin[start:start + T].to(x.dtype))

    def head(self, x):
        """Logits (..., vocab_size) of the final normalised hidden states x (..., C), soft-capped if configured,
        with the padding rows past GPT-2's 50,257 tokens at -inf."""
        logits = self.lm_head(x)
        if self.config.logit_softcap > 0:
            # Gemma 2's soft cap: about the identity for small logits, never beyond +-cap. In float32, as
            # nanochat: tanh in bfloat16 would round the logits near the cap
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits.float() / cap)
        # One distribution everywhere: no text has a padding id, so every probability computed from these logits
        # (scoring, sampling, perplexity; the C engine does the same) is over the tokenizer's tokens alone. The
        # training loss (forward with targets) keeps its normalizer over all rows, as nanoGPT and the speedrun do
        logits[..., GPT2_VOCAB_SIZE:] = float("-inf")
        return logits

    def num_params(self):
        """Number of parameters, each tied tensor counted once (124,475,904 for the baseline; an untied head
        adds vocab_size * n_embd)."""
        return sum(p.numel() for p in self.parameters())

    def forward_cached(self, idx, cache):
        """Inference beside forward(): logits (B, T, vocab_size) of the T tokens idx (B, T), which continue the
        cache.length tokens the cache holds (positions cache.length ... cache.length+T-1); appends them to it."""
        B, T = idx.size()
        start = cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"the KV cache holds {start} tokens and {T} more would pass the model's "
                             f"block_size={self.config.block_size}; reset it and start from the last tokens")
        x, rope = self.embed(idx, start)
        mask = attention_mask(self, idx, start, cache)
        x = self.run_blocks(x, rope, mask, self.value_embeddings(idx), cache)
        cache.length += T
        return self.head(self.transformer.ln_f(x))  # (B, T, vocab_size)
