"""bench_inference.py: its quality metrics against a direct computation, and its table end to end on a tiny model."""

import dataclasses
import json
import math
import os
import re

import pytest
import torch
import torch.nn.functional as F

from measure import bench_inference
from conftest import needs_c_compiler
from cheapgpt2 import common
from cheapgpt2.data import write_shard
from cheapgpt2.model import GPT, GPTConfig
from cheapgpt2.quantize import quantize


def tiny_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=97, n_layer=2, n_head=4, n_embd=128, pos_emb="rope")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05) if p.dim() == 2 else p.normal_(1.0, 0.1)
    return model


def test_quality_metrics_equal_a_direct_computation():
    model = tiny_model()
    quantized = quantize(model, "int4wo-g32")  # coarse enough that KL and top-1 are far from trivial
    tokens = torch.randint(0, 97, (3 * 64 + 1,), generator=torch.Generator().manual_seed(1))
    inputs, targets = tokens[:-1].view(3, 64), tokens[1:].view(3, 64)
    runners = {"none": bench_inference.Runner(model), "int4": bench_inference.Runner(quantized)}
    quality = bench_inference.measure_quality(runners, inputs, targets)

    with torch.no_grad():
        reference_logits, reference_loss = model(inputs)[0], model(inputs, targets)[1]
        logits, loss = quantized(inputs)[0], quantized(inputs, targets)[1]
    log_p_reference, log_p = F.log_softmax(reference_logits, -1), F.log_softmax(logits, -1)
    kl = F.kl_div(log_p.view(-1, 97), log_p_reference.view(-1, 97), log_target=True, reduction="batchmean")
    top1 = (reference_logits.argmax(-1) == logits.argmax(-1)).float().mean()
    assert quality["none"]["loss"] == pytest.approx(reference_loss.item(), rel=1e-5)
    assert quality["int4"]["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert quality["int4"]["ppl_ratio"] == pytest.approx(math.exp(loss.item()) / math.exp(reference_loss.item()), rel=1e-5)
    assert quality["int4"]["kl"] == pytest.approx(kl.item(), rel=1e-4)
    assert quality["int4"]["top1"] == pytest.approx(top1.item())
    assert 0 < quality["int4"]["kl"] and 0 < quality["int4"]["top1"] < 1  # the comparison is not vacuous
    assert quality["none"]["kl"] == 0 and quality["none"]["top1"] == 1 and quality["none"]["ppl_ratio"] == 1


@pytest.fixture
def checkpoint_and_data(tmp_path):
    model = tiny_model()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tokens = torch.randint(0, 97, (300,), generator=torch.Generator().manual_seed(2)).numpy()
    write_shard(str(data_dir / "tiny_val_000000.bin"), tokens)
    return str(path), str(data_dir)


def test_the_table_has_a_row_per_scheme_and_compile_setting(checkpoint_and_data, tmp_path, capsys):
    checkpoint, data_dir = checkpoint_and_data
    out = tmp_path / "bench.md"
    argv = [checkpoint, "--data_dir", data_dir, "--schemes", "none,q8_0", "--eval_tokens", "128", "--prompt_tokens", "16",
            "--decode_tokens", "4,8", "--runs", "1", "--compile", "off", "--no_rss", "--out", str(out)]
    assert bench_inference.main(argv) == 0
    table = out.read_text()
    assert table in capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| pytorch")]
    assert [row.split(" | ")[1:3] for row in rows] == [["none", "off"], ["q8_0", "off"]]
    assert "1.0000 | 0.00000 | 100.00%" in rows[0]
    header = next(line for line in table.splitlines() if line.startswith("| backend")).strip("| ").split(" | ")
    for row in rows:  # every figure filled in, but the peak memory that --no_rss skips
        cells = dict(zip(header, row.strip("| ").split(" | ")))
        assert [column for column, cell in cells.items() if cell == "—"] == ["peak RSS MB", "RSS MB generating"], cells
    assert "2.0.0" in table or "torch " + torch.__version__ in table


@pytest.mark.parametrize("flag, message", [
    (["--schemes", "none,int3"], "unknown scheme 'int3'"),
    (["--schemes", "q8_0,none"], "must start with none"),
    (["--compile", "maybe"], "--compile takes off and/or on"),
    (["--prompt_tokens", "60"], "pass the model's block_size=64"),
])
def test_bad_options_are_one_clear_line(checkpoint_and_data, capsys, flag, message):
    checkpoint, data_dir = checkpoint_and_data
    assert bench_inference.main([checkpoint, "--data_dir", data_dir, "--out", "", *flag]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_eval_tokens_zero_times_without_quality_columns(checkpoint_and_data, tmp_path):
    checkpoint, data_dir = checkpoint_and_data
    out = tmp_path / "bench.md"
    assert bench_inference.main([checkpoint, "--data_dir", data_dir, "--schemes", "none", "--eval_tokens", "0",
                                 "--prompt_tokens", "16", "--decode_tokens", "4", "--runs", "1", "--compile", "off",
                                 "--no_rss", "--out", str(out)]) == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| pytorch"))
    assert row.startswith("| pytorch | none | off | — | — | — | — | ") and "Quality:" not in out.read_text()


@pytest.mark.parametrize("scheme, ratio", [("q8_0", (1 + 4 / 64) / 4), ("q8_0-g32", (1 + 4 / 32) / 4)])  # int8 + an fp32 scale per group
def test_matrix_bytes_count_every_quantized_matrix(scheme, ratio):
    model = GPT(GPTConfig(block_size=64, vocab_size=96, n_layer=2, n_head=4, n_embd=128, tie_embeddings=False, bias=False))
    assert bench_inference.memory_row(quantize(model, scheme), model)["matrix_ratio"] == pytest.approx(ratio)


@needs_c_compiler
def test_c_engine_rows_match_pytorch_quality_and_report_their_own_memory(checkpoint_and_data, engine, tmp_path):
    """The C backend's rows: fp32 scores the validation windows as model.py does, q8_0 as quantize.py's q8_0 does
    (its rounding flips make the KL differ a little), schemes the engine lacks get no row, and every speed cell is
    the engine's own."""
    checkpoint, data_dir = checkpoint_and_data
    out = tmp_path / "bench.md"
    assert bench_inference.main([checkpoint, "--data_dir", data_dir, "--schemes", "none,int8wo,q8_0", "--backends", "pytorch,c",
                                 "--c_binary", engine, "--eval_tokens", "256", "--prompt_tokens", "16", "--decode_tokens", "4,8",
                                 "--runs", "1", "--compile", "off", "--no_rss", "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    by_name = {(r["backend"], r["scheme"]): r for r in rows}
    assert list(by_name) == [("pytorch", "none"), ("pytorch", "int8wo"), ("pytorch", "q8_0"), ("c", "none"), ("c", "q8_0")]
    torch_none, torch_q8, c_none, c_q8 = (by_name[k]["quality"] for k in [("pytorch", "none"), ("pytorch", "q8_0"), ("c", "none"), ("c", "q8_0")])
    assert c_none["loss"] == pytest.approx(torch_none["loss"], rel=1e-5)
    assert abs(c_none["kl"]) < 1e-7 and c_none["top1"] == 1.0
    assert c_q8["loss"] == pytest.approx(torch_q8["loss"], rel=1e-4)
    assert c_q8["kl"] == pytest.approx(torch_q8["kl"], rel=0.2) and c_q8["kl"] > 1e-6  # the scheme's error, seen by both
    assert c_q8["top1"] == pytest.approx(torch_q8["top1"], abs=0.01)
    for row in (by_name["c", "none"], by_name["c", "q8_0"]):
        assert row["compile"] == "—" and row["prefill"] > 0 and row["ttft_ms"] > 0 and row["decode4"] > 0 and row["decode8"] > 0
    assert by_name["c", "q8_0"]["weight_bytes"] < 0.7 * by_name["c", "none"]["weight_bytes"]

    args = bench_inference.parse_args([checkpoint, "--c_binary", engine, "--threads", "1"])
    parent_memory = b"\1" * (256 << 20)  # the engine's peak is its own, not this process's
    memory = bench_inference.c_backend(args, "none", tiny_model()).memory(tiny_model())
    assert 0 < memory["peak_rss"] < 64e6, memory
    del parent_memory


def test_the_machine_is_named_with_its_instruction_set():
    # every table names the CPU and its vector instructions: "AMD EPYC" alone was AVX2-only on one machine, AVX-512 on another
    assert common.instruction_set({"fma", "avx2"}) == "AVX2"
    assert common.instruction_set({"avx2", "avx512f", "avx512_vnni"}) == "AVX-512 with VNNI"
    assert common.instruction_set({"avx2", "avx512f", "avx512_vnni", "amx_int8"}) == "AVX-512 with VNNI and AMX"
    assert common.instruction_set({"avx2", "avx_vnni"}) == "AVX2 with VNNI"
    assert common.instruction_set({"asimd"}) == "NEON"
    if os.path.exists("/proc/cpuinfo"):
        assert re.match(r".+ \((AVX|NEON|no AVX2).*\), \d+ cores, ", common.hardware())


def test_only_make_bench_inferences_model_writes_the_committed_table_by_default():
    assert bench_inference.parse_args(["out/quant_cpu/ckpt.pt"]).out == "media/bench_inference.md"
    assert bench_inference.parse_args(["--hf", "gpt2"]).out == "out/bench_inference.md"  # docs/quantization.md's command
    assert bench_inference.parse_args(["out/mine/ckpt.pt"]).out == "out/bench_inference.md"
    assert bench_inference.parse_args(["--hf", "gpt2", "--out", "x.md"]).out == "x.md"
