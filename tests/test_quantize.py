"""quantize.py: each scheme's error bound, q8_0 against a direct re-implementation, and quantized models of every variant."""

import dataclasses
import sys

import numpy as np
import pytest
import torch

from cheapgpt2.checkpoint import load_checkpoint
from cheapgpt2.generate import generate
from cheapgpt2.model import GPT, GPTConfig
from cheapgpt2.quantize import (SCHEMES, BF16Linear, Int4Linear, Int8Linear, Q8_0Linear, int4_dequantize, int4_quantize,
                                q4_0_pack, q4_0_quantize, q8_0_dequantize, q8_0_matmul, q8_0_quantize, quantize)

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
    w[1, :128] = 0.0  # an all-zero group (of 32, 64 or 128): scale 0, q 0
    return w


# -----------------------------------------------------------------------------
# q8_0

def reference_q8_0_quantize(v, group_size):
    """One row (numpy float32) in c/FORMAT.md's words: per group scale = max|v| / 127, q = rint(v / scale)."""
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


# -----------------------------------------------------------------------------
# q4_0 (llama.cpp's Q4_0) and bf16

def reference_q4_0_quantize(v):
    """One row (numpy float32) as llama.cpp's quantize_row_q4_0_ref loops over it: per block of 32, the value of the
    largest magnitude (the first one), d = max / -8, id = 1/d, q = MIN(15, (int8_t)(v * id + 8.5f)); d stored as fp16."""
    qs, ds = [], []
    for block in v.reshape(-1, 32):
        amax, largest = np.float32(0), np.float32(0)
        for value in block:
            if amax < abs(value):
                amax, largest = abs(value), value
        d = np.float32(largest / np.float32(-8))
        inverse = np.float32(1) / d if d else np.float32(0)
        qs.append([min(15, int(np.float32(np.float32(value * inverse) + np.float32(8.5)))) for value in block])
        ds.append(np.float32(np.float16(d)))
    return np.array(qs, dtype=np.int64).reshape(-1), np.array(ds, dtype=np.float32)


def test_q4_0_equals_llama_cpps_loop_bit_for_bit():
    w = random_matrix(16, 128, seed=5)
    w[2, 40] = -w[2, 40:64].abs().max() - 1  # a negative largest value: d > 0, and it maps to q = 0
    w[3, :32] = 0.25  # ties of magnitude: the first one is the largest
    q, scale = q4_0_quantize(w)
    assert q.dtype == torch.int8 and q.min() >= -8 and q.max() <= 7 and scale.shape == (16, 4)
    for row in range(16):
        expected_q, expected_d = reference_q4_0_quantize(w[row].numpy())
        assert q[row].tolist() == (expected_q - 8).tolist(), row
        assert scale[row].tolist() == expected_d.tolist(), row
    assert (q[1, :32] == 0).all() and scale[1, 0] == 0  # the all-zero group
    assert torch.equal(scale, scale.half().float())  # fp16 numbers: a GGUF Q4_0 block holds them exactly


def test_q4_0_packs_two_values_a_byte_as_a_gguf_block_does():
    q = torch.arange(-8, 8, dtype=torch.int8).repeat(2, 4)  # (2, 64): values 0..15 after the offset
    packed = q4_0_pack(q)
    assert packed.shape == (2, 32) and packed.dtype == torch.uint8
    # value j in the low nibble of byte j, value j + 16 in the high one
    assert packed[0, 0].item() == (0 | 0 << 4) and packed[0, 1].item() == (1 | 1 << 4)
    unpacked = torch.stack([packed & 15, packed >> 4], dim=-2).reshape(2, 2, 32)  # (rows, groups, 32)
    assert torch.equal(unpacked.reshape(2, 64).to(torch.int8) - 8, q.reshape(2, 2, 2, 16).reshape(2, 64))


def test_q4_0_matmul_is_q8_0s_on_the_4_bit_values():
    w = random_matrix(24, 128, seed=6)
    x = random_matrix(3, 128, seed=7) * 0.1
    linear = torch.nn.Linear(128, 24, bias=False)
    linear.weight.data = w
    layer = Q8_0Linear(linear, 32, weights="q4_0")
    q, d = q4_0_quantize(w)
    assert torch.equal(layer(x), q8_0_matmul(x, q, d, 32))
    assert torch.allclose(layer(x), x @ w.t(), rtol=0.2, atol=0.2 * (x @ w.t()).abs().max())


def test_bf16_rounds_each_weight_to_nearest_and_multiplies_in_fp32():
    linear = torch.nn.Linear(64, 8)
    layer = BF16Linear(linear)
    rounded = linear.weight.detach().to(torch.bfloat16).float()
    assert torch.equal(layer.dequantize_rows(torch.arange(8)), rounded)
    x = torch.randn(3, 64)
    assert torch.equal(layer(x), x @ rounded.t() + linear.bias.detach())


def test_q4_0_keeps_the_head_in_q8_0_and_q4_0_head_does_not():
    assert quantize(tiny_model(), "q4_0").lm_head.wscale.shape[1] == 128 // 32
    head = quantize(tiny_model(), "q4_0").lm_head.qweight
    assert head.abs().max() > 8  # int8 values: not 4-bit
    assert quantize(tiny_model(), "q4_0-head").lm_head.qweight.abs().max() <= 8


def test_q8_0_model_ties_the_embedding_to_the_quantized_head():
    model = quantize(tiny_model(), "q8_0")
    idx = torch.tensor([[5, 0, 96]])
    expected = q8_0_dequantize(*q8_0_quantize(tiny_model().lm_head.weight.detach(), 64))[idx]
    assert torch.equal(model.transformer.wte(idx), expected)


# -----------------------------------------------------------------------------
# every scheme on every variant

# the main schemes on every variant; their siblings (other group sizes, per-tensor, torchao) on one each
SCHEME_VARIANTS = [(scheme, variant) for scheme in ("int8wo", "int8dq", "int4wo-g64", "q8_0") for variant in VARIANTS] + [
    ("int8dq-pertensor", "modern"), ("int4wo-g32", "rope_swiglu"), ("int4wo-g128", "modern"), ("q8_0-g32", "modern"),
    ("q4_0", "gpt2"), ("q4_0", "modern"), ("q4_0-head", "rope_swiglu"), ("bf16", "gpt2"), ("bf16", "modern"),
    ("torchao-int8wo", "gpt2"), ("torchao-int8dq", "modern")]


def test_every_scheme_is_tested_on_a_model():
    assert {scheme for scheme, _ in SCHEME_VARIANTS} == set(SCHEMES) - {"none"}


@pytest.mark.parametrize("scheme, variant", SCHEME_VARIANTS)
def test_quantized_model_follows_the_original_and_generates(variant, scheme):
    if scheme.startswith("torchao"):
        pytest.importorskip("torchao", reason="torchao is optional (requirements-dev.txt pins it)")
    original = tiny_model(**VARIANTS[variant])
    # trained-like weights: zero-init projections would make every scheme trivially exact
    with torch.no_grad():
        for p in original.parameters():
            p.normal_(0, 0.05) if p.dim() == 2 else p.normal_(1.0, 0.1)
    model = quantize(original, scheme)
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(0))
    logits, loss = model(idx)[0], model(idx, idx)[1]  # with targets, forward returns the loss only
    reference_logits, reference_loss = original(idx)[0], original(idx, idx)[1]
    assert logits.shape == reference_logits.shape
    assert abs(loss.item() - reference_loss.item()) < 0.05
    # 4 bits leave about 10% noise on each weight of a Gaussian matrix; 8 bits under 1%
    tolerance = 0.3 if scheme.startswith(("int4", "q4")) else 0.1
    assert (logits - reference_logits).abs().max() < tolerance * reference_logits.abs().max()
    out = generate(model, idx[:1, :5], max_new_tokens=6, temperature=0)
    assert out.shape == (1, 11) and torch.equal(out[:, :5], idx[:1, :5])
    weights = [m.weight for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear)]
    assert all(type(w) is not torch.nn.Parameter for w in weights)  # none left in fp32 (torchao: tensor subclasses)
    assert any(isinstance(m, torch.nn.Linear) for m in original.transformer.h.modules())  # the original is kept


def test_unknown_scheme_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown quantization scheme 'int3'; choose one of none, "):
        quantize(tiny_model(), "int3")


# -----------------------------------------------------------------------------
# int8 per channel, int4 in groups

def test_int8_per_channel_round_trip_and_weight_only_matmul():
    w = random_matrix(40, 96, seed=4)
    linear = torch.nn.Linear(96, 40)
    linear.weight.data.copy_(w)
    layer = Int8Linear(linear)
    assert layer.qweight.dtype == torch.int8 and layer.wscale.shape == (40,)
    dequantized = layer.dequantize_rows(torch.arange(40))
    assert ((dequantized - w).abs().amax(1) <= layer.wscale / 2 * (1 + 1e-5)).all()
    assert layer.wscale[0] == 40.0 / 127  # the outlier row: its max sets its scale alone
    for tokens in (5, 40):  # decoding (torch's int8-weight kernel) and prefill (dequantized matmul)
        x = torch.randn(tokens, 96)
        assert torch.allclose(layer(x), x @ dequantized.t() + linear.bias, atol=1e-4)


@pytest.mark.parametrize("activations", ["token", "tensor"])
def test_int8_dynamic_activations_equal_a_direct_computation(activations):
    w, x = random_matrix(40, 96, seed=5), torch.randn(6, 96)
    x[2] *= 50  # one token far larger than the rest, as GPT-2's first token
    linear = torch.nn.Linear(96, 40, bias=False)
    linear.weight.data.copy_(w)
    layer = Int8Linear(linear, activations)
    xscale = (x.abs().amax(1, keepdim=True) if activations == "token" else x.abs().max()) / 127
    qx = torch.round(x / xscale).clamp(-127, 127).double()
    expected = (qx @ layer.qweight.double().t()).float() * xscale * layer.wscale  # integer sums exact in float64
    assert torch.allclose(layer(x), expected, rtol=1e-6, atol=1e-6)


def test_per_token_activation_scales_keep_the_small_tokens_that_one_scale_loses():
    w, x = random_matrix(40, 96, seed=6), torch.randn(6, 96)
    x[0] *= 100  # a massive-activation token
    linear = torch.nn.Linear(96, 40, bias=False)
    linear.weight.data.copy_(w)
    exact = linear(x)[1:]
    error = {a: ((Int8Linear(linear, a)(x)[1:] - exact).norm() / exact.norm()).item() for a in ("token", "tensor")}
    assert error["token"] < 0.02 < 0.2 < error["tensor"]


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_round_trip_is_within_half_a_step_and_the_kernel_computes_it(group_size):
    w = random_matrix(32, 256, seed=7)
    q, scale, zero = int4_quantize(w, group_size)
    assert q.max() <= 15 and scale.shape == zero.shape == (32, 256 // group_size)
    dequantized = int4_dequantize(q, scale, zero)
    error = (dequantized - w).reshape(32, -1, group_size).abs().amax(-1)
    assert (error <= scale / 2 + 1e-5).all()
    assert torch.equal(dequantized[1, :128], torch.zeros(128))  # a constant group comes back exactly
    linear = torch.nn.Linear(256, 32)
    linear.weight.data.copy_(w)
    x = torch.randn(3, 256)
    assert torch.allclose(Int4Linear(linear, group_size)(x), x @ dequantized.t() + linear.bias, atol=1e-3)


def test_int4_rejects_a_row_that_does_not_split_into_groups():
    with pytest.raises(ValueError, match="does not split into groups of 128"):
        quantize(tiny_model(n_embd=64), "int4wo-g128")


def test_missing_torchao_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao then raises ImportError
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(ValueError, match=r"scheme torchao-int8wo needs torchao: pip install torchao==\S+ \(or use int8wo"):
        quantize(tiny_model(), "torchao-int8wo")


# -----------------------------------------------------------------------------
# --quant on the command lines

@pytest.fixture
def checkpoint(tmp_path):
    # GPT-2's vocabulary, as the CLIs encode text; small otherwise, as its head alone is 50304 x 64
    model = tiny_model(**VARIANTS["modern"], vocab_size=50304, n_embd=64, n_layer=1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05) if p.dim() == 2 else p.normal_(1.0, 0.1)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    return str(path)


def one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_sample_quant_generates_what_the_quantized_model_generates(checkpoint, capsys, monkeypatch):
    import sample
    from cheapgpt2.tokenizer import EOT_TOKEN, get_encoding
    calls = []

    def quantize_and_count(model, scheme):  # q8_0 greedy text can equal fp32's: check the quantized model runs
        quantized = quantize(model, scheme)
        forward_cached = quantized.forward_cached
        quantized.forward_cached = lambda *a: calls.append(scheme) or forward_cached(*a)
        return quantized

    monkeypatch.setattr(sample, "quantize", quantize_and_count)
    assert sample.main([checkpoint, "--prompt", "Once", "--max_new_tokens", "8", "--temperature", "0",
                        "--device", "cpu", "--quant", "q8_0"]) == 0
    assert calls and set(calls) == {"q8_0"}
    enc = get_encoding()
    prompt = torch.tensor([[EOT_TOKEN] + enc.encode("Once")])
    model = quantize(load_checkpoint(checkpoint)[0].eval(), "q8_0")
    tokens = generate(model, prompt, 8, temperature=0)[0, prompt.shape[1]:].tolist()
    expected = b"".join(enc.decode_single_token_bytes(t) if t < enc.n_vocab else "\ufffd".encode() for t in tokens)
    assert capsys.readouterr().out == "Once" + expected.decode("utf-8", errors="replace") + "\n"
    assert sample.main([checkpoint, "--prompt", "Once", "--quant", "int3"]) == 1
    assert "unknown quantization scheme 'int3'" in one_error_line(capsys)


def test_eval_commonsense_qa_quant_scores_the_quantized_model(checkpoint, tmp_path, capsys):
    import json

    import eval_commonsense_qa
    from cheapgpt2.multiple_choice import evaluate, load_examples
    row = {"id": "q1", "question": "Where would you put a cup after washing it?",
           "choices": {"label": list("ABCDE"), "text": ["cupboard", "garden", "car engine", "oven", "mailbox"]}, "answerKey": "A"}
    data, out = tmp_path / "csqa.jsonl", tmp_path / "results.json"
    data.write_text(json.dumps(row) + "\n")
    argv = [checkpoint, "--data", str(data), "--format", "cloze", "--out", str(out), "--device", "cpu"]
    assert eval_commonsense_qa.main([*argv, "--quant", "int4wo-g64"]) == 0
    scored = json.loads(out.read_text())["cloze"]["examples"][0]["loglikelihoods"]
    model = quantize(load_checkpoint(checkpoint)[0].eval(), "int4wo-g64")
    expected = evaluate(model, load_examples("commonsense_qa_cloze", str(data)))["examples"][0]["loglikelihoods"]
    assert scored == pytest.approx(expected, abs=1e-4)
    unquantized = evaluate(load_checkpoint(checkpoint)[0].eval(), load_examples("commonsense_qa_cloze", str(data)))
    assert scored != pytest.approx(unquantized["examples"][0]["loglikelihoods"], abs=1e-4)  # --quant did something
    capsys.readouterr()
    assert eval_commonsense_qa.main([*argv, "--quant", "int3"]) == 1
    assert "unknown quantization scheme 'int3'" in one_error_line(capsys)


def test_eval_lm_quant_hands_lm_eval_the_quantized_model(checkpoint, tmp_path, capsys, monkeypatch):
    pytest.importorskip("lm_eval", reason="lm-eval is a test extra (requirements-dev.txt)")
    import eval_lm
    from cheapgpt2.quantize import Q8_0Linear
    given = []

    def stop_at_the_model(model, **kwargs):  # the model lm-eval would score; no need to run lm-eval itself here
        given.append(model)
        raise ValueError("stopped")

    monkeypatch.setattr(eval_lm, "task_manager_for", lambda include_path: type("Tasks", (), {"all_tasks": ["t"]})())
    monkeypatch.setattr(eval_lm, "make_lm_class", lambda: stop_at_the_model)
    argv = [checkpoint, "--tasks", "t", "--device", "cpu", "--out", str(tmp_path / "r.json")]
    assert eval_lm.main([*argv, "--quant", "q8_0"]) == 1 and "stopped" in one_error_line(capsys)
    assert isinstance(given[0].lm_head, Q8_0Linear)
    assert eval_lm.main([*argv, "--quant", "int3"]) == 1
    assert "unknown quantization scheme 'int3'" in one_error_line(capsys)
