"""quantize.py: each scheme's error bound, q8_0 against a direct re-implementation, and quantized models of every variant."""

import numpy as np
import pytest
import torch

from model import GPT, GPTConfig
from quantize import SCHEMES, q8_0_dequantize, q8_0_matmul, q8_0_quantize, quantize

# every model variant: positions, MLP, norm, QK-norm, head tied or not, soft-cap (n_embd 128: groups of 32-128 fit)
VARIANTS = {
    "gpt2": dict(),
    "rope_swiglu": dict(pos_emb="rope", mlp="swiglu"),
    "modern": dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True, tie_embeddings=False,
                   logit_softcap=15.0, bias=False),
}


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = GPTConfig(**{**dict(block_size=64, vocab_size=97, n_layer=2, n_head=4, n_embd=128), **overrides})
    return GPT(config).eval()


def random_matrix(rows, cols, seed):
    """Gaussian values with a few outliers and one all-zero group, the cases a quantizer gets wrong."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w[0, 3] = 40.0  # an outlier sets its group's scale
    w[1, :64] = 0.0  # an all-zero group (of 32 or 64): scale 0, q 0
    return w


# -----------------------------------------------------------------------------
# q8_0

def reference_q8_0_quantize(v, group_size):
    """One row (numpy float32) in the INTERFACES.md words: per group scale = max|v| / 127, q = rint(v / scale)."""
    groups = v.reshape(-1, group_size)
    scale = np.abs(groups).max(axis=1) / np.float32(127)
    safe = np.where(scale == 0, np.float32(1), scale)
    return np.clip(np.rint(groups / safe[:, None]), -127, 127).astype(np.int64), scale


def reference_q8_0_matmul(x, w, group_size):
    """y = x @ w.T one output at a time, as the C engine loops: integer dot per group, then fp32 in group order."""
    x, w = x.numpy(), w.numpy()
    y = np.zeros((x.shape[0], w.shape[0]), dtype=np.float32)
    quantized_rows = [reference_q8_0_quantize(row, group_size) for row in w]
    for n in range(x.shape[0]):
        qx, sx = reference_q8_0_quantize(x[n], group_size)
        for o, (qw, sw) in enumerate(quantized_rows):
            acc = np.float32(0)
            for g in range(len(sw)):
                dot = int(qx[g] @ qw[g])  # exact in int64, as int32 in C
                acc = np.float32(acc + np.float32(dot) * sw[g] * sx[g])
            y[n, o] = acc
    return torch.from_numpy(y)


@pytest.mark.parametrize("group_size", [32, 64])
def test_q8_0_round_trip_is_within_half_a_step_of_each_group(group_size):
    w = random_matrix(48, 256, seed=1)
    q, scale = q8_0_quantize(w, group_size)
    assert q.dtype == torch.int8 and scale.shape == (48, 256 // group_size)
    assert q.abs().max() <= 127 and (q.reshape(48, -1, group_size).abs().amax(-1) == 127).sum() == scale.gt(0).sum()
    error = (q8_0_dequantize(q, scale) - w).reshape(48, -1, group_size).abs().amax(-1)
    assert (error <= scale / 2 * (1 + 1e-5)).all()  # rounding to nearest: at most half a step, in fp32
    assert (q[1, :64] == 0).all() and scale[1, 0] == 0


@pytest.mark.parametrize("group_size", [32, 64])
def test_q8_0_matmul_equals_a_direct_reimplementation_exactly(group_size):
    w = random_matrix(24, 128, seed=2)
    x = random_matrix(3, 128, seed=3) * 0.1
    y = q8_0_matmul(x, *q8_0_quantize(w, group_size), group_size)
    assert torch.equal(y, reference_q8_0_matmul(x, w, group_size))
    assert torch.allclose(y, x @ w.t(), rtol=0.02, atol=0.05 * (x @ w.t()).abs().max())


def test_q8_0_rounds_half_to_even():
    # with scale 1 (max 127): 2.5 -> 2, 3.5 -> 4, -0.5 -> 0, as rintf in the default rounding mode
    row = torch.tensor([[127.0, 2.5, 3.5, -0.5] + [0.0] * 28])
    q, scale = q8_0_quantize(row, 32)
    assert scale.item() == 1.0 and q[0, :4].tolist() == [127, 2, 4, 0]


def test_q8_0_rejects_a_row_that_does_not_split_into_groups():
    with pytest.raises(ValueError, match="does not split into groups of 64"):
        q8_0_quantize(torch.randn(4, 96), 64)


def test_q8_0_model_ties_the_embedding_to_the_quantized_head():
    model = quantize(tiny_model(), "q8_0")
    idx = torch.tensor([[5, 0, 96]])
    expected = q8_0_dequantize(*q8_0_quantize(tiny_model().lm_head.weight.detach(), 64))[idx]
    assert torch.equal(model.transformer.wte(idx), expected)


# -----------------------------------------------------------------------------
# every scheme on every variant

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "none"])
def test_quantized_model_follows_the_original_and_generates(variant, scheme):
    original = tiny_model(**VARIANTS[variant])
    # trained-like weights: zero-init projections would make every scheme trivially exact
    with torch.no_grad():
        for p in original.parameters():
            p.normal_(0, 0.05) if p.dim() == 2 else p.normal_(1.0, 0.1)
    model = quantize(original, scheme)
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(0))
    logits, loss = model(idx, idx)
    reference_logits, reference_loss = original(idx, idx)
    assert logits.shape == reference_logits.shape
    assert abs(loss.item() - reference_loss.item()) < 0.05
    assert (logits - reference_logits).abs().max() < 0.1 * reference_logits.abs().max()
    out = model.generate(idx[:1, :5], max_new_tokens=6, temperature=0)
    assert out.shape == (1, 11) and torch.equal(out[:, :5], idx[:1, :5])
    assert not any(isinstance(m, torch.nn.Linear) for m in model.transformer.h.modules())  # the original's stay
    assert any(isinstance(m, torch.nn.Linear) for m in original.transformer.h.modules())


def test_unknown_scheme_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown quantization scheme 'int3'; choose one of none, "):
        quantize(tiny_model(), "int3")
