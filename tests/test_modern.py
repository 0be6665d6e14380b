"""The modern variant, piece by piece: Newton-Schulz and Muon, the Muon/AdamW split, RMSNorm, QK-norm, ReLU²,
soft-capping, the untied and zero-initialised head, and configs/modern.py through train.py (tiny, CPU).

    python -m pytest -q tests/test_modern.py
"""

import math
import os

import numpy as np
import pytest
import torch

import test_train
import train
from cheapgpt2.estimate import flops_per_token
from cheapgpt2.model import CausalSelfAttention, GPT, GPTConfig, MLP, RMS_NORM_EPS, make_norm, rope_cos_sin
from cheapgpt2.muon import Muon, NEWTON_SCHULZ_COEFFICIENTS, configure_muon, newton_schulz
from test_model import assert_causal, randomize_, small_config
from test_train import REPO, TINY, read_log

MODERN_CONFIG = os.path.join(REPO, "configs", "modern.py")
MODERN = dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True, tie_embeddings=False, zero_init_proj=True,
              logit_softcap=15.0, bias=False)
OPTIONS = [dict(norm="rmsnorm"), dict(qk_norm=True), dict(qk_norm=True, pos_emb="rope"), dict(mlp="relu2"),
           dict(tie_embeddings=False), dict(zero_init_proj=True), dict(logit_softcap=2.0), MODERN]


def svd_factors(rows, cols, singular_values, generator):
    """U (rows, k) and V (cols, k) with orthonormal columns, k = len(singular_values), and G = U diag(s) V^T."""
    k = len(singular_values)
    U = torch.linalg.qr(torch.randn(rows, k, generator=generator, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(cols, k, generator=generator, dtype=torch.float64)).Q
    return U, V, (U * singular_values) @ V.T


# -----------------------------------------------------------------------------
# Newton-Schulz and Muon

def test_five_quintic_steps_map_singular_values_into_the_band():
    # the iteration acts on each singular value s (after the Frobenius normalisation) as s -> a s + b s^3 + c s^5;
    # 5 steps take every s in [1.6e-3, 1] into [0.68, 1.21]: muon.py's stated band, computed in float64
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    s = np.logspace(np.log10(1.6e-3), 0, 100_001)
    for _ in range(5):
        s = a * s + b * s ** 3 + c * s ** 5
    assert 0.68 <= s.min() and s.max() <= 1.21


# square, tall and wide; the Gaussian ones not square, as a square Gaussian matrix has singular values
# near 0, below the 1.6e-3 of the norm that 5 steps can lift into the band
@pytest.mark.parametrize("rows,cols,spectrum", [
    (64, 64, "two_decades"), (256, 64, "two_decades"), (64, 256, "two_decades"), (96, 200, "two_decades"),
    (768, 96, "two_decades"), (256, 64, "gaussian"), (64, 256, "gaussian"), (96, 200, "gaussian"), (768, 96, "gaussian"),
])
def test_newton_schulz_returns_singular_values_near_one(rows, cols, spectrum):
    g = torch.Generator().manual_seed(rows + cols)
    k = min(rows, cols)
    if spectrum == "two_decades":  # singular values log-uniform in [0.01, 1]: no smaller than 1.6e-3 of the norm
        U, V, G = svd_factors(rows, cols, torch.logspace(-2, 0, k, dtype=torch.float64), g)
    else:
        G = torch.randn(rows, cols, generator=g, dtype=torch.float64)
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        V = Vh.T
    X = newton_schulz(G.float())
    assert X.dtype == torch.bfloat16 and X.shape == (rows, cols)
    s = torch.linalg.svdvals(X.double())
    # the float64 band [0.68, 1.21], widened by 0.015 for the bfloat16 arithmetic (measured: 0.673 to 1.203)
    assert s.min() >= 0.665 and s.max() <= 1.225, (s.min().item(), s.max().item())
    # and it is G's own orthogonal factor U V^T, not just any matrix with such singular values
    cosine = (X.double() * (U @ V.T)).sum() / (X.double().norm() * math.sqrt(k))
    assert cosine > 0.97


def test_newton_schulz_works_on_a_batch_of_matrices_one_by_one():
    G = torch.randn(3, 40, 24, generator=torch.Generator().manual_seed(0))
    batched = newton_schulz(G)
    for i in range(3):
        torch.testing.assert_close(batched[i], newton_schulz(G[i]), atol=0, rtol=0)


def test_muon_step_is_orthogonalised_nesterov_momentum_scaled_by_shape():
    g = torch.Generator().manual_seed(0)
    wide, tall, qkv = (torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in [(8, 32), (32, 8), (24, 8)])
    start = [p.detach().clone() for p in (wide, tall, qkv)]
    optimizer = Muon([{"params": [wide, tall]}, {"params": [qkv], "row_blocks": 3}], lr=0.1, momentum=0.9, weight_decay=0.5)
    grads = [[torch.randn(p.shape, generator=g) for p in (wide, tall, qkv)] for _ in range(2)]
    momentum = [torch.zeros_like(p) for p in start]
    expected = [p.clone() for p in start]
    for step_grads in grads:
        for p, grad in zip((wide, tall, qkv), step_grads):
            p.grad = grad.clone()
        optimizer.step()
        for i, grad in enumerate(step_grads):
            momentum[i] = momentum[i].lerp(grad, 0.1)  # 0.9 m + 0.1 g, rounded as Muon rounds it
            nesterov = grad.lerp(momentum[i], 0.9)  # 0.1 g + 0.9 m
            if i == 2:  # q, k and v orthogonalised apart, each (8, 8): scale 1
                update = torch.cat([newton_schulz(block) for block in nesterov.split(8)]).float()
            else:  # the tall (32, 8) one steps sqrt(32/8) = 2 times further than the wide one
                update = newton_schulz(nesterov).float() * (2.0 if i == 1 else 1.0)
            expected[i] = expected[i] * (1 - 0.1 * 0.5) - 0.1 * update
    for p, e in zip((wide, tall, qkv), expected):
        torch.testing.assert_close(p.detach(), e, atol=1e-6, rtol=1e-5)


def test_muon_refuses_what_is_not_a_matrix():
    with pytest.raises(ValueError, match="give embeddings, the head and 1-D parameters to AdamW"):
        Muon([torch.nn.Parameter(torch.zeros(8))])


@pytest.mark.parametrize("overrides", [MODERN, dict(), dict(mlp="swiglu", pos_emb="rope"), dict(tie_embeddings=False)])
def test_muon_and_adamw_groups_partition_the_parameters(overrides):
    model = GPT(small_config(**overrides))
    optimizer = configure_muon(model, 0.02, 0.95, 4e-3, 0.2, 0.0, (0.8, 0.95), "cpu")
    muon, adamw = optimizer.optimizers
    in_muon = [p for group in muon.param_groups for p in group["params"]]
    in_adamw = [p for group in adamw.param_groups for p in group["params"]]
    everything = [id(p) for p in in_muon + in_adamw]
    assert len(everything) == len(set(everything))  # no parameter twice
    assert set(everything) == {id(p) for p in model.parameters()}  # none missing
    block_matrices = {id(p) for p in model.transformer.h.parameters() if p.dim() == 2}
    assert {id(p) for p in in_muon} == block_matrices
    fused_qkv = {id(block.attn.c_attn.weight) for block in model.transformer.h}
    assert {id(p) for g in muon.param_groups if g["row_blocks"] == 3 for p in g["params"]} == fused_qkv
    assert any(p is model.lm_head.weight for p in in_adamw) and any(p is model.transformer.wte.weight for p in in_adamw)
    # every group scheduled in proportion to its own peak lr: Muon's, the head's, and the embedding's when it
    # is not the head (an untied one, or GPT-2's position table)
    has_embedding_group = not model.config.tie_embeddings or model.config.pos_emb == "learned"
    assert sorted({round(g["lr_scale"] * 4e-3, 9) for g in optimizer.param_groups}) == (
        [0.004, 0.02, 0.2] if has_embedding_group else [0.004, 0.02])


# -----------------------------------------------------------------------------
# the model options

@pytest.mark.parametrize("overrides", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_changing_token_t_changes_no_earlier_logit(overrides):
    model = GPT(small_config(**overrides)).eval()
    randomize_(model)  # zero-initialised projections would hide everything
    assert_causal(model)


def test_rmsnorm_matches_llama_reference():
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    ours = make_norm(small_config(norm="rmsnorm", n_embd=48))
    randomize_(ours)
    reference = LlamaRMSNorm(48, eps=RMS_NORM_EPS)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 48, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-6, rtol=1e-5)
    assert not any("bias" in name for name, _ in ours.named_parameters())


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_qk_norm_attention_matches_explicit_reference(pos_emb):
    config = small_config(qk_norm=True, pos_emb=pos_emb, n_head=2)
    attn = CausalSelfAttention(config).eval()
    randomize_(attn)
    B, T, C, hs = 2, 12, config.n_embd, config.n_embd // config.n_head
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(3)) * 5
    rope = rope_cos_sin(hs, T, config.rope_theta) if pos_emb == "rope" else None

    q, k, v = (t.view(B, T, config.n_head, hs).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
    q = q / torch.sqrt(q.pow(2).mean(-1, keepdim=True) + RMS_NORM_EPS)  # unit RMS per head and position
    k = k / torch.sqrt(k.pow(2).mean(-1, keepdim=True) + RMS_NORM_EPS)
    if rope is not None:
        half = hs // 2
        cos, sin = rope
        q, k = (t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin for t in (q, k))
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)
    assert scores.abs().max() <= math.sqrt(hs) + 1e-4  # the point of QK-norm: bounded logits, whatever x's scale
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), float("-inf"))
    y = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, rope), attn.c_proj(y), atol=1e-5, rtol=1e-5)


def test_relu2_mlp_squares_a_relu():
    mlp = MLP(small_config(mlp="relu2"))
    randomize_(mlp)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), mlp.c_proj(torch.clamp(mlp.c_fc(x), min=0) ** 2), atol=1e-6, rtol=1e-5)
    assert sum(p.numel() for p in mlp.parameters()) == sum(p.numel() for p in MLP(small_config()).parameters())


def test_logit_softcap_is_cap_times_tanh_of_logits_over_cap():
    plain = GPT(small_config()).eval()
    randomize_(plain)
    capped = GPT(small_config(logit_softcap=0.5)).eval()
    capped.load_state_dict(plain.state_dict())  # no parameters of its own
    idx = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, capped_logits = plain(idx)[0], capped(idx)[0]
    assert logits.abs().max() > 1.0  # some logits well beyond the cap
    torch.testing.assert_close(capped_logits, 0.5 * torch.tanh(logits / 0.5), atol=1e-6, rtol=1e-5)
    assert capped_logits.abs().max() < 0.5


def test_untied_head_is_a_separate_matrix():
    model = GPT(small_config(tie_embeddings=False))
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        tied = GPT(GPTConfig())
        untied = GPT(GPTConfig(tie_embeddings=False))
    assert untied.num_params() == tied.num_params() + 50304 * 768
    # the untied embedding is a lookup: the matmul FLOPs are the tied model's, whose embedding is the head
    assert flops_per_token(untied) == flops_per_token(tied)
    assert "lm_head.weight" in untied.state_dict() and "transformer.wte.weight" in untied.state_dict()


def test_zero_initialised_projections_start_at_zero():
    model = GPT(small_config(zero_init_proj=True, tie_embeddings=False))
    projections = [p for name, p in model.named_parameters() if name.endswith("c_proj.weight")]
    assert len(projections) == 4 and all(torch.all(p == 0) for p in projections)
    assert torch.all(model.lm_head.weight == 0)
    assert model.transformer.wte.weight.std() > 0.5  # the untied embedding starts at unit scale
    idx = torch.zeros(1, 8, dtype=torch.long)
    logits, loss = model(idx)[0], model(idx, idx)[1]
    assert torch.all(logits == 0) and loss.item() == pytest.approx(math.log(97))  # uniform predictions
    tied = GPT(small_config(zero_init_proj=True))
    assert tied.transformer.wte.weight.std() > 0.01  # a tied head is the embedding: not zeroed


@pytest.mark.parametrize("overrides,message", [
    (dict(norm="batchnorm"), "norm must be"),
    (dict(mlp="relu3"), "mlp must be"),
    (dict(logit_softcap=-1.0), "logit_softcap"),
])
def test_bad_modern_options_fail_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_the_defaults_are_still_gpt2s():
    # LayerNorm, a tied head, GPT-2's initialisation (test_model.py checks the rest against transformers)
    torch.manual_seed(0)
    model = GPT(small_config())
    assert isinstance(model.transformer.ln_f, torch.nn.LayerNorm)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.h[0].attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(4), rel=0.2)


# -----------------------------------------------------------------------------
# configs/modern.py through train.py, shrunk to TINY

def test_modern_config_trains_and_its_loss_falls(corpus, tmp_path):
    assert train.main([MODERN_CONFIG, f"--data_dir={corpus}", f"--out_dir={tmp_path}", *TINY, "--max_steps=24"]) == 0
    val = [r["val_loss"] for r in read_log(tmp_path) if "val_loss" in r]
    assert val[0] == pytest.approx(math.log(50304), abs=1e-3)  # the zero head: uniform over the vocabulary
    assert val[-1] < val[0] - 3.0


def test_modern_config_resumed_after_sigterm_logs_the_same_losses(corpus, tmp_path, monkeypatch):
    # test_train.py's own resume test, every run with configs/modern.py: Muon's and AdamW's states both saved
    monkeypatch.setattr(test_train, "TINY", [MODERN_CONFIG, *TINY])
    test_train.test_resumed_run_logs_the_same_losses(corpus, tmp_path, monkeypatch)


def test_modern_config_under_two_gloo_processes_matches_one_process(corpus, tmp_path, monkeypatch):
    # every rank computes the same Muon update from the all-reduced gradient: DDP changes nothing
    monkeypatch.setattr(test_train, "TINY", [MODERN_CONFIG, *TINY])
    test_train.test_two_gloo_processes_match_one_process_and_their_checkpoint_resumes_in_one(corpus, tmp_path)


def test_every_optimizer_state_is_in_the_checkpoint(corpus, tmp_path):
    assert train.main([MODERN_CONFIG, f"--data_dir={corpus}", f"--out_dir={tmp_path}", *TINY, "--max_steps=2"]) == 0
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    muon_state, adamw_state = checkpoint["optimizer"]["optimizers"]
    assert len(muon_state["state"]) == 4 * 2  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj in each of TINY's 2 layers
    assert all("momentum_buffer" in s for s in muon_state["state"].values())
    assert all("exp_avg" in s for s in adamw_state["state"].values())


def test_resuming_an_adamw_checkpoint_with_muon_is_one_clear_line(corpus, tmp_path, capsys):
    assert train.main([MODERN_CONFIG, f"--data_dir={corpus}", f"--out_dir={tmp_path}", *TINY, "--max_steps=2",
                       "--optimizer=adamw"]) == 0
    assert train.main([MODERN_CONFIG, f"--data_dir={corpus}", f"--out_dir={tmp_path}", *TINY, "--max_steps=4"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "optimizer (checkpoint 'adamw', config 'muon')" in err and "\n" not in err
