"""bench_serve.py at a tiny shape against our own server (built here): the table it writes, and its one-line errors.
The numbers are the benchmark's business (make bench_serve), not a test's."""

import os
import subprocess

import pytest

import bench_serve
from conftest import REPO, makefile_sources, needs_c_compiler
from test_c_server import SERVER_SOURCES

ENGINE_SOURCES = makefile_sources("C_SOURCES")


@needs_c_compiler
def test_the_tables_have_a_row_per_type_and_client_count_and_per_single_stream_test(tmp_path):
    server, engine = str(tmp_path / "gpt-server"), str(tmp_path / "gpt")
    for binary, sources, libs in ((server, SERVER_SOURCES, ["-lm", "-lpthread"]), (engine, ENGINE_SOURCES, ["-lm"])):
        build = subprocess.run(["cc", "-std=c11", "-O2", "-o", binary] + [os.path.join(REPO, s) for s in sources] + libs,
                               capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
    out = tmp_path / "bench_serve.md"
    assert bench_serve.main(["--tiny", "--clients", "1,2", "--rounds", "1", "--max_tokens", "4", "--server", server,
                             "--engine", engine, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ours")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("fp32", "1"), ("fp32", "2"), ("q8_0", "1"), ("q8_0", "2")]
    assert all(float(r[3].split()[0].replace(",", "")) > 0 for r in rows)  # tokens were generated and counted
    single = [line.split("|")[1:-1] for line in lines if line.startswith(("| fp32 | prefill", "| fp32 | decode",
                                                                          "| q8_0 | prefill", "| q8_0 | decode"))]
    assert [r[1].strip() for r in single] == ["prefill 32", "decode 16 from the start", "decode 16 at depth 32"] * 2
    assert all(float(r[2].split()[0].replace(",", "")) > 0 and r[3].strip() == "—" for r in single)  # no peer: no rate
    scaling = [line.split("|")[1:-1] for line in lines if line.startswith(("| fp32 | 2 |", "| q8_0 | 2 |"))]
    assert len(scaling) == 2 and all(r[2].strip() == "—" and r[4].strip().endswith("x") for r in scaling)


@pytest.mark.parametrize("args, message", [(["--llamacpp", "/nonexistent"], "bin/llama-server"),
                                           (["--server", "/nonexistent"], "make c"), (["--engine", "/nonexistent"], "make c"),
                                           (["--rounds", "0"], "at least 1"), (["--slots", "-1"], "--slots 0 or more")])
def test_a_missing_peer_or_server_is_one_line(args, message, capsys):
    assert bench_serve.main(["--tiny", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1


def test_every_request_gets_a_prompt_of_its_own_of_the_same_length():
    # one shared prompt would let llama-server answer from its prompt cache instead of prefilling
    from tokenizer import get_encoding
    prompts = [bench_serve.prompt_of(256, number) for number in (0, 1, 9, 10, 999)]
    assert len(set(prompts)) == 5
    assert {len(get_encoding().encode_ordinary(p)) for p in prompts} == {256}
    assert len({get_encoding().encode_ordinary(p)[0] for p in prompts}) == 5  # no common prefix to reuse



@pytest.mark.parametrize("argv", [[], ["--clients", "16", "--slots", "4", "--rounds", "2"],
                                  ["--llamacpp", "PEER", "--clients", "16", "--slots", "4", "--rounds", "2"],
                                  ["--llamacpp", "PEER", "--clients", "1,4"], ["--llamacpp", "PEER", "--rounds", "1"],
                                  ["--llamacpp", "PEER", "--threads", "1"], ["--llamacpp", "PEER", "--tiny"]])
def test_a_partial_or_exploratory_run_writes_out_not_the_committed_table(argv):
    # media/bench_serve.md holds the comparison with llama.cpp that the README and docs/serving.md cite
    assert bench_serve.parse_args(argv).out == os.path.join(REPO, "out", "bench_serve.md")
    assert bench_serve.parse_args(argv + ["--out", "media/bench_serve.md"]).out == "media/bench_serve.md"  # when asked


def test_only_the_full_comparison_with_the_peer_writes_the_committed_table():
    assert bench_serve.parse_args(["--llamacpp", "PEER"]).out == os.path.join(REPO, "media", "bench_serve.md")
