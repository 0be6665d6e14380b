"""model.py against reference implementations (transformers' GPT-2 and Llama), on small random configs."""

import math

import pytest
import torch
import torch.nn.functional as F

from cheapgpt2.estimate import estimate_mfu, flops_per_token
from cheapgpt2.generate import generate
from cheapgpt2.hf import from_pretrained
from cheapgpt2.model import CausalSelfAttention, GPT, GPTConfig, SwiGLU, apply_rope, rope_cos_sin
from cheapgpt2.training import configure_adamw

transformers = pytest.importorskip("transformers")

VARIANTS = [(pos_emb, mlp) for pos_emb in ("learned", "rope") for mlp in ("gelu", "swiglu")]


def small_config(**overrides):
    return GPTConfig(**{**dict(block_size=32, vocab_size=97, n_layer=2, n_head=4, n_embd=32), **overrides})


def randomize_(module, seed=0):
    """Random values everywhere (biases and LayerNorm too), so that a mis-mapped weight can't hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_from_pretrained_matches_transformers_gpt2(tmp_path):
    hf_config = transformers.GPT2Config(vocab_size=113, n_positions=48, n_embd=32, n_layer=3, n_head=4,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    randomize_(hf_model)
    hf_model.save_pretrained(tmp_path)
    model = from_pretrained(str(tmp_path)).eval()
    assert (model.config.vocab_size, model.config.block_size, model.config.n_layer) == (113, 48, 3)

    idx = torch.randint(0, 113, (2, 48), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 113, (2, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hf_out = hf_model(idx, labels=None)
        logits, loss = model(idx)[0], model(idx, targets)[1]  # with targets, forward returns the loss only
    torch.testing.assert_close(logits, hf_out.logits, atol=1e-5, rtol=0)
    # transformers' labels are shifted inside the model; compute its loss on our targets directly
    hf_loss = F.cross_entropy(hf_out.logits.view(-1, 113), targets.view(-1))
    assert abs(loss.item() - hf_loss.item()) < 1e-6


def test_from_pretrained_rejects_a_directory_without_weights(tmp_path):
    transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, n_positions=8, vocab_size=11).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        from_pretrained(str(tmp_path))


def test_rope_matches_llama_reference():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
    B, nh, T, hs, theta = 2, 3, 16, 8, 500.0
    llama_config = transformers.LlamaConfig(hidden_size=nh * hs, num_attention_heads=nh, rope_theta=theta,
                                            max_position_embeddings=T)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(B, nh, T, hs, generator=g), torch.randn(B, nh, T, hs, generator=g)
    cos_ref, sin_ref = LlamaRotaryEmbedding(llama_config)(q, torch.arange(T)[None])
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    # same "rotate half" layout as Llama: no re-ordering of the head dimension is needed
    cos, sin = rope_cos_sin(hs, T, theta)
    torch.testing.assert_close(apply_rope(q, cos, sin), q_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(apply_rope(k, cos, sin), k_ref, atol=1e-6, rtol=1e-5)


def test_rope_attention_matches_masked_softmax_reference():
    config = small_config(pos_emb="rope", n_head=2)
    attn = CausalSelfAttention(config).eval()
    randomize_(attn)
    B, T, C, hs = 2, 12, config.n_embd, config.n_embd // config.n_head
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(3))
    cos, sin = rope_cos_sin(hs, T, config.rope_theta)

    # reference: explicit rotation by position angle, explicit mask, explicit softmax
    q, k, v = (t.view(B, T, config.n_head, hs).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
    angle = torch.arange(T)[:, None] * config.rope_theta ** (-torch.arange(0, hs, 2) / hs)  # (T, hs/2)

    def rotate(t):  # pairs (i, i + hs/2) rotated by angle, as a complex multiplication
        z = torch.complex(t[..., :hs // 2], t[..., hs // 2:]) * torch.polar(torch.ones_like(angle), angle)
        return torch.cat([z.real, z.imag], dim=-1)

    scores = rotate(q) @ rotate(k).transpose(-2, -1) / math.sqrt(hs)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), float("-inf"))
    y = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, (cos, sin)), attn.c_proj(y), atol=1e-5, rtol=1e-5)


def test_swiglu_matches_llama_mlp():
    from transformers.models.llama.modeling_llama import LlamaMLP
    config = small_config(mlp="swiglu", n_embd=48)
    ours = SwiGLU(config)
    randomize_(ours)
    reference = LlamaMLP(transformers.LlamaConfig(hidden_size=48, intermediate_size=config.swiglu_hidden,
                                                  hidden_act="silu", mlp_bias=True,
                                                  num_attention_heads=4))
    reference.load_state_dict({"gate_proj.weight": ours.c_gate.weight, "gate_proj.bias": ours.c_gate.bias,
                               "up_proj.weight": ours.c_fc.weight, "up_proj.bias": ours.c_fc.bias,
                               "down_proj.weight": ours.c_proj.weight, "down_proj.bias": ours.c_proj.bias})
    x = torch.randn(3, 5, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-6, rtol=1e-5)


def assert_causal(model, t=11):
    """Changing token t of a random input changes no logit before t, and does change the logits from t on."""
    idx = torch.randint(0, model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[0, t] = (idx[0, t] + 1) % model.config.vocab_size
    with torch.no_grad():
        before, after = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(before[:, :t], after[:, :t], atol=0, rtol=0)
    assert not torch.allclose(before[:, t:], after[:, t:])  # the change is seen from t on


@pytest.mark.parametrize("pos_emb,mlp", VARIANTS)
def test_changing_token_t_changes_no_earlier_logit(pos_emb, mlp):
    torch.manual_seed(0)
    assert_causal(GPT(small_config(pos_emb=pos_emb, mlp=mlp)).eval())


def test_parameter_counts_of_gpt2_124m():
    assert GPT(GPTConfig()).num_params() == 124_475_904
    assert GPT(GPTConfig(vocab_size=50257)).num_params() == 124_439_808


def test_swiglu_keeps_the_mlp_parameter_count_within_one_percent():
    config = GPTConfig()
    gelu, swiglu = GPT(config).num_params(), GPT(GPTConfig(mlp="swiglu")).num_params()
    assert config.swiglu_hidden == 2048
    assert abs(swiglu - gelu) / gelu < 0.01


def test_flops_per_token_follows_palm_appendix_b():
    model = GPT(GPTConfig())
    non_embedding = 124_475_904 - 1024 * 768  # the position table is a lookup, not a matmul
    assert flops_per_token(model) == 6 * non_embedding + 12 * 12 * 12 * 64 * 1024
    assert estimate_mfu(model, 1e5, peak_flops=1e15) == pytest.approx(flops_per_token(model) * 1e5 / 1e15)
    # modded-nanogpt's way: causal attention's masked half (half of the 12*L*T*d) left out
    assert flops_per_token(model, causal=True) == 6 * non_embedding + 6 * 12 * 12 * 64 * 1024
    assert estimate_mfu(model, 1e5, 1e15, causal=True) == pytest.approx(flops_per_token(model, causal=True) * 1e5 / 1e15)


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989.5),
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100 80GB PCIe", 312), ("NVIDIA A100-PCIE-40GB", 312),
    ("NVIDIA H100 NVL", None), ("NVIDIA H200 NVL", None), ("NVIDIA GeForce RTX 4090", None), ("NVIDIA L4", None)])
def test_the_peak_flops_for_mfu_come_from_the_gpus_name(name, tflops):
    # torch.cuda.get_device_name() as each GPU reports itself; an unknown one gets no MFU rather than the H100's
    from cheapgpt2.estimate import gpu_peak_flops
    assert gpu_peak_flops(name) == (tflops * 1e12 if tflops else None)


def test_loss_ignores_targets_of_minus_one():
    torch.manual_seed(0)
    model = GPT(small_config()).eval()
    idx = torch.randint(0, 97, (2, 10))
    targets = torch.randint(0, 97, (2, 10))
    masked = targets.clone()
    masked[:, 5:] = -1
    with torch.no_grad():
        logits, loss = model(idx)[0], model(idx, masked)[1]
    expected = F.cross_entropy(logits[:, :5].reshape(-1, 97), targets[:, :5].reshape(-1))
    assert abs(loss.item() - expected.item()) < 1e-6


def test_generate_is_deterministic_under_a_seed_and_greedy_at_temperature_zero():
    model = GPT(small_config(block_size=8)).eval()
    prompt = torch.zeros(1, 3, dtype=torch.long)
    torch.manual_seed(7)
    a = generate(model, prompt, 12, temperature=0.8, top_k=5)
    torch.manual_seed(7)
    b = generate(model, prompt, 12, temperature=0.8, top_k=5)
    assert a.shape == (1, 15) and torch.equal(a, b)  # longer than block_size: the context is cropped
    greedy = generate(model, prompt, 1, temperature=0)
    assert greedy[0, -1] == model(prompt)[0][0, -1].argmax()


def test_configure_optimizer_decays_only_matrices():
    model = GPT(small_config())
    optimizer = configure_adamw(model, 0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_input_longer_than_block_size_is_a_clear_error():
    model = GPT(small_config(block_size=8))
    with pytest.raises(ValueError, match="block_size is 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("overrides,message", [
    (dict(n_embd=30, n_head=4), "divisible by n_head"),
    (dict(pos_emb="alibi"), "pos_emb must be"),
    (dict(mlp="relu"), "mlp must be"),
    (dict(pos_emb="rope", n_embd=36, n_head=4), "must be even"),
    (dict(n_layer=0), "positive integer"),
    (dict(dropout=1.5), "dropout"),
])
def test_bad_config_fails_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)
