"""Generation with the KV cache (model.generate, forward_cached) against the no-cache path, and the sampling filters
against transformers' top-k and top-p logits warpers."""

import itertools

import pytest
import torch

from cheapgpt2 import generate as generate_module
from cheapgpt2.generate import filter_logits, generate, new_kv_cache, sample_next_token
from cheapgpt2.model import GPT
from test_model import randomize_, small_config

BLOCK_SIZE = 16  # tiny, so that 110 new tokens run far past it
NEW_TOKENS = 100

# every variant and option combination: positions x MLP x norm x QK-norm x tied head x soft-cap
COMBINATIONS = [dict(pos_emb=p, mlp=m, norm=n, qk_norm=q, tie_embeddings=t, logit_softcap=c)
                for p, m, n, q, t, c in itertools.product(("learned", "rope"), ("gelu", "swiglu", "relu2"),
                                                          ("layernorm", "rmsnorm"), (False, True), (True, False), (0.0, 5.0))]


def random_model(seed=0, **overrides):
    model = GPT(small_config(block_size=BLOCK_SIZE, vocab_size=64, n_embd=16, n_head=2, **overrides)).eval()
    randomize_(model, seed)
    return model


def no_cache_logits(model, idx, steps):
    """The reference for the last `steps` generated tokens of idx (B, T): the logits that predicted each of them,
    every one from the whole window before it (its last block_size tokens) through forward(), all windows in one batch."""
    block_size = model.config.block_size
    windows, last = [], []
    for end in range(idx.size(1) - steps, idx.size(1)):
        window = idx[:, max(0, end - block_size):end]
        last.append(window.size(1) - 1)
        windows.append(torch.nn.functional.pad(window, (0, block_size - window.size(1))))  # right padding: never seen
    with torch.no_grad():
        logits = model(torch.cat(windows))[0]  # (steps * B, block_size, vocab)
    B = idx.size(0)
    return torch.stack([logits[i * B:(i + 1) * B, p] for i, p in enumerate(last)], dim=1)  # (B, steps, vocab)


@pytest.mark.parametrize("overrides", COMBINATIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_cached_greedy_decoding_equals_the_no_cache_path_past_block_size(overrides, monkeypatch):
    model = random_model(**overrides)
    prompt = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    cached = []  # the logits generate() decided each token from, as the cache gave them
    next_token_logits = generate_module.next_token_logits
    monkeypatch.setattr(generate_module, "next_token_logits",
                        lambda model, idx, cache: cached.append(next_token_logits(model, idx, cache)) or cached[-1])
    idx = generate(model, prompt, NEW_TOKENS, temperature=0)
    assert idx.size(1) > 6 * BLOCK_SIZE and len(cached) == NEW_TOKENS
    expected = no_cache_logits(model, idx, NEW_TOKENS)
    torch.testing.assert_close(torch.stack(cached, dim=1), expected, atol=1e-5, rtol=0)
    assert torch.equal(idx[:, prompt.size(1):], expected.argmax(dim=-1))  # greedy: the no-cache path's tokens


def test_a_prompt_longer_than_block_size_conditions_on_its_last_tokens():
    model = random_model(pos_emb="rope")
    prompt = torch.randint(0, 64, (1, 3 * BLOCK_SIZE + 1), generator=torch.Generator().manual_seed(2))
    out = generate(model, prompt, 20, temperature=0)
    assert torch.equal(out[:, :prompt.size(1)], prompt)
    assert torch.equal(out[:, prompt.size(1):], generate(model, prompt[:, -BLOCK_SIZE:], 20, temperature=0)[:, BLOCK_SIZE:])


def test_forward_cached_refuses_to_pass_block_size():
    model = random_model()
    cache = new_kv_cache(model, 1)
    model.forward_cached(torch.zeros(1, BLOCK_SIZE - 1, dtype=torch.long), cache)
    model.forward_cached(torch.zeros(1, 1, dtype=torch.long), cache)
    assert cache.length == BLOCK_SIZE
    with pytest.raises(ValueError, match="block_size"):
        model.forward_cached(torch.zeros(1, 1, dtype=torch.long), cache)


def test_forward_cached_in_chunks_gives_forwards_logits():
    model = random_model(pos_emb="learned", mlp="swiglu")
    idx = torch.randint(0, 64, (2, BLOCK_SIZE), generator=torch.Generator().manual_seed(3))
    cache = new_kv_cache(model, 2)
    with torch.no_grad():
        chunks = [model.forward_cached(idx[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 16)]]
        torch.testing.assert_close(torch.cat(chunks, dim=1), model(idx)[0], atol=1e-5, rtol=0)


# -----------------------------------------------------------------------------
# sampling

def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.0, -1.0, 2.0, 2.0, 1.0]])
    kept = filter_logits(logits, top_k=2) > -float("inf")
    assert kept.tolist() == [[False, True, False, True, False], [False, False, True, True, False]]
    assert (filter_logits(logits, top_k=100) == logits).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.05, 0.2, 0.15, 0.1]])
    logits = probs.log()
    kept = lambda p: (filter_logits(logits, top_p=p) > -float("inf")).tolist()[0]  # noqa: E731
    assert kept(0.5) == [True, False, False, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.51) == [True, False, True, False, False]  # 0.5 + 0.2
    assert kept(0.8) == [True, False, True, True, False]  # 0.5 + 0.2 + 0.15 = 0.85
    assert kept(0.01) == [True, False, False, False, False]  # always the most likely token
    assert kept(1.0) == [True] * 5


@pytest.mark.parametrize("top_k, top_p", [(None, 0.3), (None, 0.9), (7, None), (20, 0.8)])
def test_filters_match_transformers_warpers(top_k, top_p):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(4)) * 3
    expected = logits.clone()
    if top_k is not None:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p is not None:
        expected = TopPLogitsWarper(top_p)(None, expected)
    assert torch.equal(filter_logits(logits, top_k, top_p) == -float("inf"), expected == -float("inf"))


def test_sampling_never_picks_a_filtered_token():
    logits = torch.zeros(1, 10)
    logits[0, 3], logits[0, 7] = 2.0, 1.9
    torch.manual_seed(0)
    draws = {sample_next_token(logits, temperature=1.5, top_k=2).item() for _ in range(200)}
    assert draws == {3, 7}


def test_a_seed_makes_sampling_reproducible():
    model = random_model(pos_emb="rope", mlp="relu2")
    prompt = torch.zeros(1, 1, dtype=torch.long)
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(generate(model, prompt, 30, temperature=1.0, top_k=40, top_p=0.95))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_bad_sampling_options_are_clear_errors():
    logits = torch.zeros(1, 5)
    for kwargs, message in [(dict(top_k=0), "top_k"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                            (dict(temperature=-1.0), "temperature")]:
        with pytest.raises(ValueError, match=message):
            sample_next_token(logits, **{"temperature": 1.0, **kwargs})
