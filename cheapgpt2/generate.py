"""
Generation from a GPT: the KV cache's prefill and decode, and sampling (temperature, top-k, top-p).

    from cheapgpt2.generate import generate
    out = generate(model, idx, max_new_tokens=64, temperature=0.8, top_k=200)   # idx (B, T) -> (B, T + 64)

These functions know nothing of text: they take and return token ids (sample.py encodes and decodes).
"""

import torch
from torch.nn import functional as F

from cheapgpt2.model import KVCache


def new_kv_cache(model, batch_size):
    """An empty KVCache for forward_cached, in the model's dtype and on its device."""
    cfg, weight = model.config, model.transformer.ln_f.weight  # not lm_head: quantize.py replaces it (no fp32 .weight)
    return KVCache(cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head,
                   dtype=weight.dtype, device=weight.device)


@torch.no_grad()
def next_token_logits(model, idx, cache=None):
    """Logits (B, vocab_size) for the token after idx (B, T), conditioned on its last block_size tokens.
    cache=None runs the whole window. A cache must hold the first cache.length tokens of idx (or nothing):
    only the rest run. Past block_size the window slides, every position moves, so the cache is refilled
    with the window: exactly the no-cache result, at the no-cache cost for those tokens."""
    window = idx[:, -model.config.block_size:]
    if cache is None:
        return model(window)[0][:, -1, :]
    if idx.size(1) > model.config.block_size or cache.length >= idx.size(1):
        cache.reset()
    return model.forward_cached(window[:, cache.length:], cache)[:, -1, :]


@torch.no_grad()
def generate_tokens(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True):
    """Yield the max_new_tokens tokens that follow idx (B, T), one (B, 1) tensor per step: a prefill over
    the prompt, then one token per step against the KV cache. Options as sample_next_token."""
    cache = new_kv_cache(model, idx.size(0)) if use_cache else None
    for _ in range(max_new_tokens):
        idx_next = sample_next_token(next_token_logits(model, idx, cache), temperature, top_k, top_p)
        idx = torch.cat((idx, idx_next), dim=1)
        yield idx_next


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True):
    """idx (B, T) with max_new_tokens sampled tokens appended. temperature=0 picks the most likely token;
    use_cache=False reruns the whole window every step (same tokens, slower: for comparison)."""
    new = list(generate_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, use_cache))
    return torch.cat([idx, *new], dim=1)


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
