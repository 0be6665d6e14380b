"""bench_serve.py at a tiny shape against our own server (built here): the table it writes, and its one-line errors.
The numbers are the benchmark's business (make bench_serve), not a test's."""

import os
import subprocess

import pytest

import bench_serve
from conftest import REPO, needs_c_compiler
from test_c_server import SERVER_SOURCES


@needs_c_compiler
def test_the_serving_table_has_a_row_per_type_and_client_count(tmp_path):
    server = str(tmp_path / "gpt-server")
    build = subprocess.run(["cc", "-std=c11", "-O2", "-o", server] + [os.path.join(REPO, s) for s in SERVER_SOURCES]
                           + ["-lm", "-lpthread"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = tmp_path / "bench_serve.md"
    assert bench_serve.main(["--tiny", "--clients", "1,2", "--rounds", "1", "--max_tokens", "4", "--server", server,
                             "--out", str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ours")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [("fp32", "1"), ("fp32", "2"), ("q8_0", "1"), ("q8_0", "2")]
    assert all(float(r[3].split()[0].replace(",", "")) > 0 for r in rows)  # tokens were generated and counted


@pytest.mark.parametrize("args, message", [(["--llamacpp", "/nonexistent"], "bin/llama-server"),
                                           (["--server", "/nonexistent"], "make c"), (["--rounds", "0"], "at least 1")])
def test_a_missing_peer_or_server_is_one_line(args, message, capsys):
    assert bench_serve.main(["--tiny", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
