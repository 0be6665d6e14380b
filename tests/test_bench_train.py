"""bench_train.py: the GPU throughput table, run here at a tiny shape, and the full-size smoke test of every GPU
config (124M parameters, 1024-token context, one optimizer step on the CPU in bf16)."""

import math

import pytest

import bench_train


def test_the_gpu_table_runs_every_config_at_a_tiny_shape(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert bench_train.main(["--tiny", "--steps=1", "--warmup=1", f"--out={out}"]) == 0
    table = out.read_text()
    assert "at a tiny shape" in table and "torch" in table
    rows = [line for line in table.splitlines() if line.startswith("| `configs/")]
    assert [row.split("`")[1] for row in rows] == [
        "configs/baseline.py", "configs/increase_max_lr.py", "configs/rotational_pos_emb.py", "configs/swiglu.py",
        "configs/modern.py"]
    for row in rows:  # tokens/s, an MFU only on CUDA, ..., the whole run's projected hours and dollars
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[1].replace(",", "")) > 0 and cells[2] == "—"
        assert cells[7].endswith("tokens") and cells[8].startswith("$")
    assert table in capsys.readouterr().out


def test_a_bad_config_or_gpu_config_without_a_gpu_is_one_line(capsys):
    assert bench_train.main(["--tiny", "--steps=0"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    import torch
    if not torch.cuda.is_available():  # the real shapes with device "auto" and no GPU: refused, not run for hours
        assert bench_train.main(["--steps=1"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and "--device=cpu forces the CPU" in err and err.count("\n") == 1


@pytest.mark.parametrize("config", bench_train.GPU_CONFIGS, ids=lambda path: path.rsplit("/", 1)[-1])
def test_full_size_smoke_every_gpu_config_takes_one_bf16_step_at_its_real_shape(config):
    row = bench_train.bench_config(config, bench_train.SMOKE, steps=1, warmup=0)
    # an untrained model predicts about uniformly: ln(50257) = 10.82; a shape or dtype bug shows as an error or far off
    assert math.isfinite(row["first_loss"]) and abs(row["first_loss"] - math.log(50257)) < 0.5, row["first_loss"]
