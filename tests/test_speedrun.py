"""The NanoGPT speedrun's later techniques (model.py's doc_mask, attn_window, value_embeds, unet_skips; train.py's
growing window and Muon momentum warmup): each pinned by what it must and must not change, and the whole model
held against a straightforward re-implementation written here from the records' description."""

import math

import pytest
import torch
import torch.nn.functional as F

import train
from cheapgpt2.config import TrainConfig
from torch.nn.attention.flex_attention import BlockMask

from cheapgpt2 import hf, model as model_module, training
from cheapgpt2.estimate import flops_per_token
from cheapgpt2.generate import new_kv_cache
from cheapgpt2.model import GPT, GPTConfig, attention_mask
from cheapgpt2.tokenizer import EOT_TOKEN
from test_model import randomize_

SPEEDRUN = dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True, tie_embeddings=False, bias=False,
                logit_softcap=15.0, doc_mask=True, attn_window=6, value_embeds=True, unet_skips=True)


def tiny(n_layer=3, **overrides):
    # GPT-2's vocabulary: <|endoftext|> (50256) must be a token of it; narrow, so that it stays small
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**dict(block_size=24, n_layer=n_layer, n_head=2, n_embd=16), **overrides}))
    randomize_(model)  # every weight, gain and skip weight away from its initial value: a mix-up can't hide
    return model.eval()


def tokens(seed=0, T=20, eot_at=()):
    idx = torch.randint(0, 1000, (2, T), generator=torch.Generator().manual_seed(seed))
    for position in eot_at:
        idx[:, position] = EOT_TOKEN
    return idx


def logits_of(model, idx):
    with torch.no_grad():
        return model(idx)[0]


@pytest.mark.parametrize("doc_mask", [True, False])
def test_a_token_after_an_end_of_text_ignores_the_documents_before_it(doc_mask):
    model = tiny(**{**SPEEDRUN, "attn_window": 0, "doc_mask": doc_mask})
    idx = tokens(eot_at=(8,))  # the second document starts at position 8, with its <|endoftext|>
    other = idx.clone()
    other[:, :8] = tokens(seed=1)[:, :8]  # another first document
    a, b = logits_of(model, idx), logits_of(model, other)
    assert not torch.allclose(a[:, :8], b[:, :8])
    if doc_mask:
        torch.testing.assert_close(a[:, 8:], b[:, 8:], atol=0, rtol=0)
    else:  # the test can fail: without the mask the earlier document shows through
        assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_a_token_beyond_the_window_of_every_layer_is_not_seen():
    # a window of 4 moves information 3 positions a layer: with 2 layers, token 0 reaches positions 0 ... 6 only
    model = tiny(n_layer=2, **{**SPEEDRUN, "attn_window": 4, "value_embeds": False, "unet_skips": False})
    idx = tokens()
    other = idx.clone()
    other[:, 0] = (idx[:, 0] + 1) % 1000
    a, b = logits_of(model, idx), logits_of(model, other)
    assert not torch.allclose(a[:, 6], b[:, 6])
    torch.testing.assert_close(a[:, 7:], b[:, 7:], atol=0, rtol=0)


def reference_logits(model, idx):
    """The speedrun model written out plainly: per-position masks from loops, U-net skips block by block."""
    cfg, (B, T) = model.config, idx.shape
    n, hs = cfg.n_layer, cfg.n_embd // cfg.n_head
    docs = [[int((idx[b, :i + 1] == EOT_TOKEN).sum()) for i in range(T)] for b in range(B)]
    allowed = torch.tensor([[[j <= i and (not cfg.attn_window or i - j < cfg.attn_window)
                              and (not cfg.doc_mask or docs[b][i] == docs[b][j]) for j in range(T)]
                             for i in range(T)] for b in range(B)])  # (B, T, T)
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]

    def rotate(t):  # (B, nh, T, hs), Llama's rotate-half
        return t * cos + torch.cat([-t[..., hs // 2:], t[..., :hs // 2]], dim=-1) * sin

    x, outputs = model.transformer.wte(idx), []
    for i, block in enumerate(model.transformer.h):
        if cfg.unet_skips and i >= n - n // 2:  # the second half: block i takes block n-1-i's output
            x = x + model.skip_weights[n - 1 - i] * outputs[n - 1 - i]
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(x)).split(cfg.n_embd, dim=2)
        if cfg.value_embeds:  # layer i and layer n-1-i share a table
            v = attn.value_lambdas[0] * v + attn.value_lambdas[1] * model.value_embeds[min(i, n - 1 - i)](idx)
        q, k, v = (t.view(B, T, cfg.n_head, hs).transpose(1, 2) for t in (q, k, v))
        q, k = rotate(F.rms_norm(q, (hs,), eps=1e-6)), rotate(F.rms_norm(k, (hs,), eps=1e-6))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        y = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, cfg.n_embd)
        x = x + attn.c_proj(y)
        x = x + block.mlp(block.ln_2(x))
        outputs.append(x)
    logits = cfg.logit_softcap * torch.tanh(model.lm_head(model.transformer.ln_f(x)) / cfg.logit_softcap)
    padding = torch.arange(cfg.vocab_size) >= 50257  # the ids past GPT-2's tokenizer: no probability
    return logits.masked_fill(padding, float("-inf"))


@pytest.mark.parametrize("n_layer", [3, 4])
def test_the_speedrun_model_equals_a_straightforward_implementation(n_layer):
    model = tiny(n_layer=n_layer, **SPEEDRUN)
    idx = tokens(eot_at=(5, 13))
    with torch.no_grad():
        torch.testing.assert_close(logits_of(model, idx), reference_logits(model, idx), atol=1e-5, rtol=1e-5)


def test_value_embeddings_and_skips_add_the_parameters_they_say():
    plain = tiny(n_layer=5, **{**SPEEDRUN, "value_embeds": False, "unet_skips": False}).num_params()
    tables = tiny(n_layer=5, **{**SPEEDRUN, "unet_skips": False}).num_params() - plain
    skips = tiny(n_layer=5, **{**SPEEDRUN, "value_embeds": False}).num_params() - plain
    assert tables == 3 * 50304 * 16 + 5 * 2  # ceil(5/2) tables; two mixing weights in every attention
    assert skips == 2  # blocks 3 and 4 take blocks 1 and 0
    # value embeddings are lookups, not matmuls: no training FLOPs of their own beyond the two mixing weights
    flops = [flops_per_token(tiny(n_layer=5, **{**SPEEDRUN, "unet_skips": False, "value_embeds": ve})) for ve in (0, 1)]
    assert flops[1] - flops[0] == 6 * 5 * 2


def test_a_window_counts_its_keys_in_the_training_flops():
    full, windowed = (tiny(**{**SPEEDRUN, "attn_window": w, "value_embeds": False}) for w in (0, 6))
    attention = 12 * 3 * 16  # 12 x n_layer x n_embd FLOPs per key
    assert flops_per_token(full) - flops_per_token(windowed) == attention * (24 - 6)
    # unmasked: T/2 keys on average without a window; W - W^2/2T with one (W for most queries, fewer at the start)
    assert flops_per_token(full, causal=True) - flops_per_token(full, causal=False) == -attention * 12
    assert flops_per_token(windowed, causal=True) == pytest.approx(flops_per_token(windowed) - attention * 6 * 6 / 48)


def test_the_kv_cache_gives_the_logits_of_the_whole_sequence():
    # documents and windows at inference as at training: the prompt holds an <|endoftext|>, and the tokens
    # that follow one at a time cross another and pass the window
    model = tiny(**SPEEDRUN)
    idx = tokens(T=22, eot_at=(4, 15))
    expected = logits_of(model, idx)
    cache = new_kv_cache(model, 2)
    with torch.no_grad():
        steps = [model.forward_cached(idx[:, :10], cache)] + [model.forward_cached(idx[:, t:t + 1], cache)
                                                              for t in range(10, 22)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-5, rtol=1e-5)


def test_the_window_grows_and_muon_momentum_warms_up_over_the_run():
    cfg = TrainConfig(max_steps=100, attn_window=256, attn_window_start=64, muon_momentum_warmup_steps=30)
    assert [training.attention_window(s, cfg) for s in (0, 50, 100)] == [64, 160, 256]
    assert [training.muon_momentum(s, cfg) for s in (0, 15, 30, 60)] == pytest.approx([0.85, 0.90, 0.95, 0.95])
    plain = TrainConfig(attn_window=256)
    assert training.attention_window(7, plain) == 256 and training.muon_momentum(0, plain) == 0.95
    with pytest.raises(ValueError, match="attn_window_start"):
        TrainConfig(attn_window=64, attn_window_start=128)


def test_speedrun_options_train_compiled_like_eager_without_recompiling_as_the_window_grows(corpus, tmp_path):
    # the window is a tensor the compiled graph reads: growing it every step must not recompile
    options = [f"--data_dir={corpus}", "--block_size=32", "--n_layer=2", "--n_head=2", "--n_embd=32", "--batch_size=4",
               "--total_batch_size=128", "--max_steps=12", "--warmup_steps=2", "--max_lr=3e-3", "--eval_interval=6",
               "--eval_tokens=128", "--log_interval=1", "--device=cpu", "--dtype=float32", "--sample_tokens=0",
               "--csqa_data=", "--hellaswag_data=", "--optimizer=muon", "--pos_emb=rope", "--norm=rmsnorm",
               "--mlp=relu2", "--tie_embeddings=False", "--bias=False", "--doc_mask=True", "--attn_window=32",
               "--attn_window_start=4", "--value_embeds=True", "--unet_skips=True", "--muon_momentum_warmup_steps=6"]
    runs = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        out = tmp_path / str(compiled)
        assert train.main(options + [f"--out_dir={out}", f"--compile={compiled}"]) == 0
        from test_train import read_log
        runs[compiled] = [r for r in read_log(out) if "train_loss" in r]
    assert runs[True][-1]["train_loss"] < runs[True][0]["train_loss"] - 0.3  # it learns (measured: 10.8 -> 10.2)
    for eager, compiled in zip(runs[False], runs[True]):  # float32; Muon's bf16 Newton-Schulz amplifies reordering
        assert compiled["train_loss"] == pytest.approx(eager["train_loss"], abs=1e-3), compiled["step"]
    graphs = {r["compiled_graphs"] for r in runs[True]}
    assert len(graphs) == 1, graphs  # the same count from the first step to the last


@pytest.mark.parametrize("compiled", [False, True])
def test_flex_attention_gives_the_logits_of_the_boolean_mask(compiled, monkeypatch):
    # on CUDA the masked forward runs FlexAttention's BlockMask; here, forced, against SDPA's boolean mask. The
    # forward only: torch 2.13 has no FlexAttention backward on the CPU (its gradients run on the GPU alone)
    model = tiny(**SPEEDRUN)
    idx, targets = tokens(eot_at=(5, 13)), tokens(seed=2)
    results = []
    for flex in (False, True):
        monkeypatch.setattr(model_module, "uses_flex_attention", lambda model, idx: flex)
        assert isinstance(attention_mask(model, idx), BlockMask) == flex
        torch._dynamo.reset()
        forward = torch.compile(model) if compiled else model
        with torch.no_grad():
            results.append((forward(idx)[0], forward(idx, targets)[1]))
    for sdpa, flex in zip(*results):
        torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-4)


def test_a_run_stopped_and_resumed_continues_the_window_and_momentum_schedules(corpus, tmp_path, monkeypatch):
    # both schedules are functions of the step: a resumed run must log the straight run's losses
    import os
    import signal
    from test_train import read_log
    options = [f"--data_dir={corpus}", "--block_size=16", "--n_layer=2", "--n_head=2", "--n_embd=16", "--batch_size=4",
               "--total_batch_size=128", "--max_steps=10", "--warmup_steps=2", "--eval_interval=5", "--eval_tokens=128",
               "--log_interval=1", "--device=cpu", "--dtype=float32", "--compile=False", "--sample_tokens=0",
               "--csqa_data=", "--hellaswag_data=", "--optimizer=muon", "--pos_emb=rope", "--attn_window=16",
               "--attn_window_start=2", "--value_embeds=True", "--unet_skips=True", "--muon_momentum_warmup_steps=8"]
    assert train.main(options + [f"--out_dir={tmp_path / 'straight'}"]) == 0
    schedule = train.attention_window

    def preempt_at_step_4(step, cfg):  # a spot instance's SIGTERM arrives during step 4
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return schedule(step, cfg)

    monkeypatch.setattr(train, "attention_window", preempt_at_step_4)
    assert train.main(options + [f"--out_dir={tmp_path / 'resumed'}"]) == 128 + signal.SIGTERM
    monkeypatch.setattr(train, "attention_window", schedule)
    assert train.main(options + [f"--out_dir={tmp_path / 'resumed'}"]) == 0
    losses = [{r["step"]: r["train_loss"] for r in read_log(tmp_path / name) if "train_loss" in r}
              for name in ("straight", "resumed")]
    assert losses[0].keys() == losses[1].keys() == set(range(1, 11))
    for step in losses[0]:
        assert losses[1][step] == pytest.approx(losses[0][step], abs=1e-6), step


def test_the_hugging_face_export_refuses_what_gpt2_cannot_run():
    with pytest.raises(ValueError, match="document masking, windowed attention, value embeddings, U-net skips"):
        hf.check_gpt2_architecture(tiny(**SPEEDRUN).config)
