"""bench_train.py: the GPU throughput table, run here at a tiny shape, and the full-size smoke test of every GPU
config (124M parameters, 1024-token context, one optimizer step on the CPU in bf16)."""

import math

import pytest
import torch

from cheapgpt2.estimate import flops_per_token
from measure import bench_train


def test_the_gpu_table_runs_every_config_at_a_tiny_shape(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert bench_train.main(["--tiny", "--steps=1", "--warmup=1", f"--out={out}"]) == 0
    table = out.read_text()
    assert "at a tiny shape" in table and "torch" in table
    rows = [line for line in table.splitlines() if line.startswith("| `configs/")]
    assert [row.split("`")[1] for row in rows] == [
        "configs/baseline.py", "configs/increase_max_lr.py", "configs/rotational_pos_emb.py", "configs/swiglu.py",
        "configs/modern.py", "configs/speedrun.py"]
    assert "MFU: no peak FLOP/s is known for this device" in table  # the CPU
    for row in rows:  # tokens/s, MFU both ways only with a known peak, ..., the whole run's projected hours and dollars
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1].replace(",", "")) > 0 and cells[2] == cells[3] == "—"
        assert cells[8].endswith("tokens") and cells[9].startswith("$")
    assert table in capsys.readouterr().out


def test_a_bad_config_or_gpu_config_without_a_gpu_is_one_line(capsys):
    assert bench_train.main(["--tiny", "--steps=0"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    import torch
    if not torch.cuda.is_available():  # the real shapes with device "auto" and no GPU: refused, not run for hours
        assert bench_train.main(["--steps=1"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and "--device=cpu forces the CPU" in err and err.count("\n") == 1


# Without AVX-512 PyTorch multiplies bfloat16 matrices without oneDNN's kernels: 43x slower than float32 on the
# AVX2-only AMD EPYC this was measured on (1.3 s for 1024x768 @ 768x768), minutes per config for a real-shape step
NO_FAST_BF16 = torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2")


@pytest.mark.skipif(NO_FAST_BF16, reason="this CPU has no AVX-512: a real-shape bf16 step takes minutes per config "
                                         "here; `make smoke` runs it anyway")
@pytest.mark.parametrize("config", bench_train.GPU_CONFIGS, ids=lambda path: path.rsplit("/", 1)[-1])
def test_full_size_smoke_every_gpu_config_takes_one_bf16_step_at_its_real_shape(config):
    row = bench_train.bench_config(config, bench_train.smoke_overrides(config), steps=1, warmup=0)
    # an untrained model predicts about uniformly: ln(50257) = 10.82; a shape or dtype bug shows as an error or far off
    assert math.isfinite(row["first_loss"]) and abs(row["first_loss"] - math.log(50257)) < 0.5, row["first_loss"]


def test_a_config_leaves_nothing_behind_for_the_next_one_to_reuse_or_count():
    """Every model, optimizer and compiled graph of a config is gone once its row is returned: else the next
    config's peak memory holds this one's weights, and a config of the same architecture (increase_max_lr after
    baseline) reuses its graphs and reports no compile (measured: 3e-5 s reused, 0.22 s recompiled here)."""
    import gc
    from torch._dynamo.eval_frame import OptimizedModule
    from cheapgpt2.model import GPT
    tiny_compiled = [*bench_train.TINY, "--compile=True"]
    rows = [bench_train.bench_config(path, tiny_compiled, steps=1, warmup=1) for path in bench_train.GPU_CONFIGS[:2]]
    assert [row["config"] for row in rows] == ["configs/baseline.py", "configs/increase_max_lr.py"]
    assert rows[1]["compile_seconds"] > 0.02
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, (GPT, OptimizedModule))]


def test_mfu_is_measured_both_ways_against_a_given_peak():
    # --peak_flops stands for a GPU's on the CPU: the masked half of attention is 6LTd of 6N + 12LTd FLOPs
    row = bench_train.bench_config(bench_train.GPU_CONFIGS[0], [*bench_train.TINY, "--peak_flops=1e12"], steps=1,
                                   warmup=0)
    from cheapgpt2.config import load_config
    from cheapgpt2.model import GPT
    model = GPT(load_config(bench_train.GPU_CONFIGS[0], bench_train.TINY).model_config())
    assert row["mfu"] == pytest.approx(flops_per_token(model) * row["tok_per_s"] / 1e12)
    assert row["mfu_causal"] / row["mfu"] == pytest.approx(flops_per_token(model, causal=True) / flops_per_token(model))
    assert row["mfu_causal"] < row["mfu"]
