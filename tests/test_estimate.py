"""estimate.py (python train.py CONFIG --dry_run): its parameter, memory and cost arithmetic against real
allocations at small shapes and against transformers' GPT-2 models."""

import glob
import os
import re

import pytest
import torch

from cheapgpt2 import estimate
from cheapgpt2.model import GPT, GPTConfig
from cheapgpt2.muon import configure_muon, muon_parameter_groups
from test_model import small_config
from cheapgpt2 import head_loss as head_loss_module
from cheapgpt2.config import load_config
from cheapgpt2.training import configure_adamw
from measure import estimate as estimate_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("overrides", [dict(), dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True,
                                                     tie_embeddings=False, bias=False, logit_softcap=15.0)])
def test_parameter_gradient_and_optimizer_bytes_are_the_real_allocation(overrides):
    config = small_config(**overrides)
    sizes = estimate.count_parameters(config)
    model = GPT(config)
    assert 4 * sizes["total"] == tensor_bytes(model.parameters())  # float32, a tied matrix once
    assert sizes["muon"] == sum(p.numel() for key in ("muon", "muon_qkv") for p in muon_parameter_groups(model)[key])
    assert sizes["root"] + config.n_layer * sizes["block"] == sizes["total"]
    idx = torch.randint(0, 97, (2, 16))
    for name in ("adamw", "muon"):
        model.zero_grad(set_to_none=True)
        model(idx, idx)[1].backward()
        assert tensor_bytes(p.grad for p in model.parameters()) == 4 * sizes["total"]
        if name == "adamw":
            optimizer = configure_adamw(model, 0.1, 1e-3, (0.9, 0.95), "cpu")
        else:
            optimizer = configure_muon(model, 0.02, 0.95, 1e-3, 1e-3, 0.0, (0.9, 0.95), "cpu")
        optimizer.step()
        states = [s for o in getattr(optimizer, "optimizers", [optimizer]) for s in o.state.values()]
        # the per-parameter `step` counters of AdamW (one float32 scalar each) are the only extra
        state_bytes = tensor_bytes(t for s in states for k, t in s.items() if k != "step")
        n_muon = sizes["muon"] if name == "muon" else 0
        assert state_bytes == 4 * n_muon + 8 * (sizes["total"] - n_muon)
        memory = estimate.memory_per_gpu(sizes, {"block_per_token": 0, "block_fixed": 0, "rest_per_token": 0,
                                                 "rest_fixed": 0, "block_input_per_token": 0}, config.n_layer,
                                         32, name, "ddp", 1, False)
        assert memory["optimizer"] == state_bytes and memory["params"] == memory["grads"] == 4 * sizes["total"]


@pytest.mark.parametrize("overrides", [dict(), dict(pos_emb="rope", mlp="swiglu"),
                                       dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True,
                                            tie_embeddings=False, bias=False, logit_softcap=15.0)])
def test_activation_estimate_matches_what_a_whole_model_keeps_for_backward(overrides, monkeypatch):
    """Measured on one layer at 64 and 128 tokens, extrapolated to 3 layers at another batch and length:
    the bytes a real 3-layer model keeps for its backward under bfloat16 autocast. Its 288 rows are more than
    one chunk of the head's loss, as a real micro-batch's are (whose logits are then not kept)."""
    monkeypatch.setattr(head_loss_module, "LOSS_CHUNK_ROWS", 100)
    config = GPTConfig(**{**dict(block_size=96, vocab_size=500, n_layer=3, n_head=4, n_embd=64), **overrides})
    activations = estimate.measure_activations(config)
    activations["block_input_per_token"] = 4 * config.n_embd
    model = GPT(config)
    idx = torch.randint(0, 500, (3, 96))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        real = estimate.saved_for_backward_bytes(lambda: model(idx, idx), list(model.parameters()))
    predicted = estimate.activation_bytes(activations, config.n_layer, 3 * 96, checkpointing=False)
    # 2%: a few kernels' saved buffers are not exactly linear in the length (tile rounding), the rest is
    assert predicted == pytest.approx(real, rel=0.02)


def test_gpt2_configs_have_the_parameter_counts_of_openais_models():
    transformers = pytest.importorskip("transformers")
    for name, hf_name in (("gpt2_medium", "gpt2-medium"), ("gpt2_large", "gpt2-large"), ("gpt2_xl", "gpt2-xl")):
        cfg = load_config(os.path.join(REPO, "configs", f"{name}.py"))
        sizes = estimate.count_parameters(cfg.model_config())
        hf_config = transformers.GPT2Config(n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head)
        with torch.device("meta"):
            hf_params = sum(p.numel() for p in transformers.GPT2LMHeadModel(hf_config).parameters())
        # the same model but for the vocabulary padded from 50,257 to 50,304 rows (and no attention bias buffers)
        assert sizes["total"] == hf_params + (50304 - 50257) * cfg.n_embd, name


def test_every_config_gets_a_table_with_the_cost_arithmetic():
    fixed = {"block_per_token": 1000.0, "block_fixed": 0.0, "rest_per_token": 100.0, "rest_fixed": 0.0}
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
        cfg = load_config(path)
        result = estimate.estimate(cfg, gpus=(1, 8), mfu=0.4, activations=dict(fixed))
        tokens = cfg.total_batch_size * cfg.max_steps
        for row in result["rows"]:
            hours = result["sizes"]["flops_per_token"] * tokens / (row["gpus"] * 989.5e12 * 0.4) / 3600
            assert row["hours"] == pytest.approx(hours) and row["dollars"] == pytest.approx(hours * row["gpus"] * cfg.gpu_hourly_cost)
            memory = row["memory"]
            assert memory["activations"] == pytest.approx(
                cfg.batch_size * cfg.block_size * (100 + cfg.n_layer * 1000 if not row["activation_checkpointing"]
                                                   else 100 + cfg.n_layer * 4 * cfg.n_embd + 1000))
            if row["parallelism"] == "fsdp":  # the float32 shard is 1/n of the whole
                assert memory["optimizer"] == pytest.approx(
                    next(r for r in result["rows"] if r["parallelism"] == "ddp")["memory"]["optimizer"] / row["gpus"])
        assert estimate.format_report(path, result).count("\n") == 2 + len(result["rows"]) - 1


def test_the_command_line_prints_the_table_and_refuses_bad_flags(capsys):
    assert estimate_cli.main([os.path.join(REPO, "configs", "demo_cpu.py"), "--gpus=2"]) == 0
    assert "fits 80GB" in capsys.readouterr().out
    assert estimate_cli.main([os.path.join(REPO, "configs", "demo_cpu.py"), "--gpus=0"]) == 1
    assert capsys.readouterr().err.startswith("error: --gpus")


def test_out_writes_the_summary_table_headed_by_the_machine_and_date(tmp_path, capsys):
    config, out = os.path.join(REPO, "configs", "demo_cpu.py"), tmp_path / "estimate.md"
    assert estimate_cli.main([config, "--gpus=2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fits 80GB" in printed and f"wrote {out}" in printed  # the full reports still printed
    header, table = out.read_text().split("\n\n", 1)
    assert header.startswith(f"`python -m measure.estimate {config} --gpus=2 --out {out}` on ")
    assert re.search(r"\b20\d\d-\d\d-\d\d\b", header) and "torch " in header
    lines = table.splitlines()
    assert lines[0].startswith("| config | params |") and "2 GPUs fsdp" in lines[0]
    assert len(lines) == 3 and lines[2].startswith(f"| {config} | ")
