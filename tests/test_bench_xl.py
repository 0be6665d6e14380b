"""bench_xl.py at a tiny shape with our engine (built here): its table, its verdict against the peer, its one-line
errors and where it writes. The numbers are the benchmark's business (make bench_xl), not a test's."""

import os
import subprocess

import pytest

from measure import bench_xl
from conftest import REPO, makefile_sources, needs_c_compiler


@needs_c_compiler
def test_the_table_has_a_row_per_type_and_test(tmp_path):
    engine = str(tmp_path / "gpt")
    build = subprocess.run(["cc", "-std=c11", "-O2", "-o", engine]
                           + [os.path.join(REPO, s) for s in makefile_sources("C_SOURCES")] + ["-lm"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = tmp_path / "bench_xl.md"
    assert bench_xl.main(["--tiny", "--rounds", "1", "--engine", engine, "--out", str(out), "--dtypes", "q4_0,bf16"]) == 0
    table = out.read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith(("| q4_0", "| bf16"))]
    assert [r[:2] for r in rows] == [[t, test] for t in ("q4_0", "bf16") for test in
                                     ("prefill 8", "prefill 16", "prefill 32", "decode 8 from the start",
                                      "decode 8 at depth 16", "decode 8 at depth 32")]
    assert all(float(r[2].replace(",", "")) > 0 and r[3:] == ["—", "—", "—"] for r in rows)  # no peer: no verdict
    assert "GPT-2 tiny shape (2 layers, 64 wide, 64 positions)" in table and "q4_0 peak memory MB" in table


def test_each_row_says_whether_it_is_at_least_llama_cpps_rate():
    stat = lambda v: (v, v, v)
    single = {("q4_0", "prefill 256"): {"ours": stat(60.0), "llama.cpp": stat(40.0)},
              ("q4_0", "decode 64 at depth 256"): {"ours": stat(9.0), "llama.cpp": stat(10.0)},
              ("q4_0", "open s"): {"ours": stat(1.5)}}
    table = bench_xl.markdown(single, "note")
    assert "| q4_0 | prefill 256 | 60.0 | 40.0 | 1.50x | yes |" in table
    assert "| q4_0 | decode 64 at depth 256 | 9.0 | 10.0 | 0.90x | no, by 10% |" in table
    assert "q4_0 open s 1.50" in table


@pytest.mark.parametrize("args, message", [(["--llamacpp", "/nonexistent"], "bin/llama-bench"),
                                           (["--engine", "/nonexistent"], "make c"), (["--rounds", "0"], "at least 1"),
                                           (["--dtypes", "q2_k"], "--dtypes takes")])
def test_bad_input_is_one_line(args, message, capsys):
    assert bench_xl.main(["--tiny", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1


def test_only_the_comparison_with_the_peer_writes_the_committed_table():
    assert bench_xl.parse_args(["--llamacpp", "PEER"]).out == os.path.join(REPO, "media", "bench_xl.md")
    for argv in ([], ["--llamacpp", "PEER", "--rounds", "1"], ["--llamacpp", "PEER", "--dtypes", "q4_0"],
                 ["--llamacpp", "PEER", "--tiny"], ["--llamacpp", "PEER", "--threads", "1"]):
        assert bench_xl.parse_args(argv).out == os.path.join(REPO, "out", "bench_xl.md")
