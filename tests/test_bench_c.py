"""bench_c.py end to end on a tiny model: every row and ratio filled from c/gpt's own --bench lines."""

import pytest

from measure import bench_c
from conftest import needs_c_compiler

pytestmark = needs_c_compiler


def test_tiny_benchmark_prints_a_full_table(engine, tmp_path, capsys):
    argv = ["--binary", engine, "--out_dir", str(tmp_path), "--tiny", "--runs", "2", "--threads", "1", "--prompt_len", "16", "--new_tokens", "8"]
    assert bench_c.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| c/gpt")]
    assert [row.split(" | ")[0] for row in rows] == ["| c/gpt fp32", "| c/gpt q8_0"]
    for row in rows:
        assert "—" not in row and row.count("tok/s") == 3, row
    assert "c/gpt q8_0 over c/gpt fp32, decode at positions 3-11:" in out
    assert (tmp_path / "bench_c.md").read_text().strip() in out  # written beside its model files, not into media/


@pytest.mark.parametrize("flags, message", [(["--binary", "/nonexistent/gpt"], "does not exist; build it with `make c`"),
                                            (["--tiny", "--llama2c", "/tmp"], "leave out --tiny"),
                                            (["--runs", "0"], "--runs and --threads take at least 1")])
def test_bad_arguments_are_one_line(engine, tmp_path, capsys, flags, message):
    argv = ["--binary", engine, "--out_dir", str(tmp_path), *flags]
    assert bench_c.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_directory_that_is_not_llama2c_is_one_line(engine, tmp_path, capsys):
    assert bench_c.main(["--binary", engine, "--out_dir", str(tmp_path / "out"), "--llama2c", str(tmp_path), "--runs", "1"]) == 1
    err = capsys.readouterr().err
    assert "is not a clone of karpathy/llama2.c (no run.c, runq.c, model.py, export.py)" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("flags", [[], ["--llama2c", "PEER", "--runs", "1"], ["--llama2c", "PEER", "--threads", "1"],
                                   ["--llama2c", "PEER", "--prompt_len", "64"]])
def test_a_partial_run_does_not_replace_the_committed_table(flags):
    # media/bench_c.md holds the comparison with llama2.c that the README cites
    assert bench_c.parse_args(flags + ["--out_dir", "out/x"]).out == "out/x/bench_c.md"
    assert bench_c.parse_args(flags + ["--out", "media/bench_c.md"]).out == "media/bench_c.md"  # when asked
    assert bench_c.parse_args(["--llama2c", "PEER"]).out == "media/bench_c.md"
