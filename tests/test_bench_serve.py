"""bench_serve.py at a tiny shape against our own server (built here): the table it writes, and its one-line errors.
The numbers are the benchmark's business (make bench_serve), not a test's."""

import os
import subprocess

import pytest

from measure import bench_serve
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
    # two of the four types (the others run the same code): the table's rows follow --dtypes
    assert bench_serve.main(["--tiny", "--clients", "1,2", "--rounds", "1", "--max_tokens", "4", "--server", server,
                             "--engine", engine, "--out", str(out), "--dtypes", "q8_0,q4_0"]) == 0
    lines = out.read_text().splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ours") and line.count("|") == 8]
    types = ["q8_0", "q4_0"]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [(t, n) for t in sorted(types) for n in ("1", "2")]
    assert all(float(r[3].split()[0].replace(",", "")) > 0 for r in rows)  # tokens were generated and counted
    single = [line.split("|")[1:-1] for line in lines if line.startswith(tuple(f"| {t} | {test}" for t in types
                                                                               for test in ("prefill", "decode")))]
    assert [r[1].strip() for r in single] == ["prefill 8", "prefill 16", "prefill 32", "decode 8 from the start",
                                              "decode 8 at depth 16", "decode 8 at depth 32"] * 2
    assert all(float(r[2].split()[0].replace(",", "")) > 0 and r[3].strip() == "—" for r in single)  # no peer: no rate
    # each prefill row as a share of this machine's peak (c/gpt --peak), the decode rows without one
    assert all(r[5].strip().endswith("%") == r[1].strip().startswith("prefill") for r in single)
    batch = [line.split("|")[1:-1] for line in lines if line.startswith("| ours") and line.count("|") == 4]
    assert [r[1].strip() for r in batch] == sorted(types) and all(float(r[2].strip().rstrip("x")) > 0 for r in batch)
    assert any(line.startswith("| q8_0 batched decode, all at once / one after another |") for line in lines)
    scaling = [line.split("|")[1:-1] for line in lines if line.startswith(tuple(f"| {t} | 2 |" for t in types))]
    assert len(scaling) == 2 and all(r[2].strip() == "—" and r[4].strip().endswith("x") for r in scaling)
    # beside a stalled reader: a row per type, its tokens counted, its rate against the plain row's, and the target
    stalled = [line.split("|")[1:-1] for line in lines if line.startswith("| ours") and "+ stalled" in line]
    assert [(r[1].strip(), r[2].strip()) for r in stalled] == [(t, "2 + stalled") for t in sorted(types)]
    assert all(float(r[3].split()[0].replace(",", "")) > 0 and r[7].strip().endswith("x") for r in stalled)
    assert sum(line.startswith(tuple(f"| {t} 2 clients beside a stalled reader" for t in types)) for line in lines) == 2


def test_the_targets_say_whether_each_is_met_and_by_how_much():
    stat = lambda v: (v, v, v)
    rows = {(engine, "q8_0", 16): {"tok_per_s": stat(tok), "ttft_median": stat(t), "ttft_p99": stat(t), "itl_median": stat(0.1)}
            for engine, tok, t in (("ours", 150.0, 3.0), ("llama.cpp", 100.0, 10.0))}
    single = {("q8_0", "prefill 512"): {"ours": stat(2000.0), "llama.cpp": stat(1000.0)},
              ("q8_0", "prefill 128"): {"ours": stat(500.0), "llama.cpp": stat(1000.0)},
              ("q8_0", "decode 256 at depth 512"): {"ours": stat(99.0), "llama.cpp": stat(100.0)}}
    stalled = {("ours", "q8_0"): {"tok_per_s": stat(141.0), "ttft_median": stat(3.0), "ttft_p99": stat(3.0),
                                  "itl_median": stat(0.1)},
               ("llama.cpp", "q8_0"): {"tok_per_s": None, "ttft_median": None, "ttft_p99": None, "itl_median": None}}
    cached = {("ours", "q8_0"): {"cold_ttft": stat(2.0), "follow_up_ttft": stat(0.1), "score_shared_s": stat(1.0),
                                 "score_different_s": stat(4.0)},
              ("llama.cpp", "q8_0"): {"cold_ttft": stat(2.2), "follow_up_ttft": stat(0.2)}}
    table = bench_serve.markdown(rows, single, {("ours", "q8_0"): stat(3.5)}, "8 requests", {"q8_0": stat(1e12)},
                                 170e6, "note", stalled, "beside a stalled reader", cached)
    targets = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
               for line in table.split("The targets")[1].splitlines() if line.startswith("| q8_0")}
    assert targets["q8_0 prefill 512, ours / llama.cpp"] == ["2.00x", "≥ 2.5x", "no, by 20%"]
    assert "q8_0 prefill 128, ours / llama.cpp" not in targets  # the target is set at 512 tokens
    assert targets["q8_0 decode 256 at depth 512, ours / llama.cpp"] == ["0.99x", "≥ 1.0x", "no, by 1%"]
    assert targets["q8_0 16 clients, aggregate tok/s ours / llama-server"] == ["1.50x", "≥ 1.5x", "yes"]
    assert targets["q8_0 16 clients, p99 TTFT ours / llama-server"] == ["0.30x", "≤ 0.6x", "yes"]
    assert targets["q8_0 batched decode, all at once / one after another"] == ["3.50x", "≥ 3.0x", "yes"]
    assert "| q8_0 | prefill 512 | 2,000.0 | 1,000.0 | 2.00x | 34% | 17% |" in table  # 2000 x 170e6 / 1e12
    assert targets["q8_0 16 clients beside a stalled reader / without it, ours, aggregate tok/s"] == ["0.94x", "≥ 0.9x", "yes"]
    assert "| llama.cpp | q8_0 | 16 + stalled | not finished |" in table
    assert targets["q8_0 follow-up TTFT / cold TTFT, ours"] == ["0.05x", "≤ 0.25x", "yes"]
    assert targets["q8_0 follow-up TTFT, ours / llama-server"] == ["0.50x", "≤ 1.0x", "yes"]
    assert targets["q8_0 lm-eval-shaped request, one context / 5 contexts, ours"] == ["0.25x", "≤ 0.5x", "yes"]
    assert "| llama.cpp | q8_0 | 2,200.0 | 200.0 | 0.09x | — | — | — |" in table


@pytest.mark.parametrize("args, message", [(["--llamacpp", "/nonexistent"], "bin/llama-server"),
                                           (["--server", "/nonexistent"], "make c"), (["--engine", "/nonexistent"], "make c"),
                                           (["--rounds", "0"], "at least 1"), (["--slots", "-1"], "--slots and --prefill_chunk 0 or more"),
                                           (["--prefill_chunk", "-1"], "--prefill_chunk 0 or more")])
def test_a_missing_peer_or_server_is_one_line(args, message, capsys):
    assert bench_serve.main(["--tiny", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1


def test_every_request_gets_a_prompt_of_its_own_of_the_same_length():
    # one shared prompt would let llama-server answer from its prompt cache instead of prefilling
    from cheapgpt2.tokenizer import get_encoding
    prompts = [bench_serve.prompt_of(256, number) for number in (0, 1, 9, 10, 999)]
    assert len(set(prompts)) == 5
    assert {len(get_encoding().encode_ordinary(p)) for p in prompts} == {256}
    assert len({get_encoding().encode_ordinary(p)[0] for p in prompts}) == 5  # no common prefix to reuse



@pytest.mark.parametrize("argv", [[], ["--clients", "16", "--slots", "4", "--rounds", "2"],
                                  ["--llamacpp", "PEER", "--clients", "16", "--slots", "4", "--rounds", "2"],
                                  ["--llamacpp", "PEER", "--clients", "1,4"], ["--llamacpp", "PEER", "--rounds", "1"],
                                  ["--llamacpp", "PEER", "--threads", "1"], ["--llamacpp", "PEER", "--tiny"],
                                  ["--llamacpp", "PEER", "--prefill_chunk", "64"]])
def test_a_partial_or_exploratory_run_writes_out_not_the_committed_table(argv):
    # media/bench_serve.md holds the comparison with llama.cpp that the README and docs/serving.md cite
    assert bench_serve.parse_args(argv).out == os.path.join(REPO, "out", "bench_serve.md")
    assert bench_serve.parse_args(argv + ["--out", "media/bench_serve.md"]).out == "media/bench_serve.md"  # when asked


def test_only_the_full_comparison_with_the_peer_writes_the_committed_table():
    assert bench_serve.parse_args(["--llamacpp", "PEER"]).out == os.path.join(REPO, "media", "bench_serve.md")


def test_the_4_bit_and_bf16_targets_are_against_llama_cpp_and_against_our_own_types():
    stat = lambda v: (v, v, v)
    decode = "decode 256 at depth 512"
    single = {("q4_0", "prefill 512"): {"ours": stat(1800.0), "llama.cpp": stat(1000.0)},
              ("q4_0", decode): {"ours": stat(180.0), "llama.cpp": stat(100.0)},
              ("q8_0", decode): {"ours": stat(140.0)},
              ("bf16", "prefill 512"): {"ours": stat(1100.0), "llama.cpp": stat(800.0)},
              ("bf16", decode): {"ours": stat(90.0), "llama.cpp": stat(55.0)},
              ("fp32", "prefill 512"): {"ours": stat(1200.0)}, ("fp32", decode): {"ours": stat(50.0)}}
    peaks = {t: stat(1e12) for t in ("fp32", "q8_0", "q4_0", "bf16")}
    rows = {("ours", "q4_0", 1): {"tok_per_s": stat(100.0), "ttft_median": stat(0.1), "ttft_p99": stat(0.1),
                                  "itl_median": stat(0.01)}}
    table = bench_serve.markdown(rows, single, {}, "8 requests", peaks, 170e6, "note")
    targets = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
               for line in table.split("The targets")[1].splitlines() if line.startswith(("| q4_0", "| bf16"))}
    assert targets["q4_0 prefill 512, ours / llama.cpp"] == ["1.80x", "≥ 1.7x", "yes"]
    assert targets[f"q4_0 {decode}, ours / llama.cpp"] == ["1.80x", "≥ 2.0x", "no, by 10%"]
    assert targets[f"q4_0 {decode}, ours / our q8_0"] == ["1.29x", "≥ 1.4x", "no, by 8%"]
    assert targets["bf16 prefill 512, ours / llama.cpp"] == ["1.38x", "≥ 1.9x", "no, by 28%"]
    assert targets[f"bf16 {decode}, ours / llama.cpp"] == ["1.64x", "≥ 1.5x", "yes"]
    assert targets[f"bf16 {decode}, ours / our fp32"] == ["1.80x", "≥ 1.7x", "yes"]
    assert targets["bf16 prefill 512, ours / our fp32"] == ["0.92x", "≥ 1.3x", "no, by 29%"]
    # bf16's peak is fp32 FMAs (its weights are widened in the kernel), q4_0's int8 products
    assert "fp32 1,000.0 GFLOP/s, q8_0 1,000.0 GOP/s, q4_0 1,000.0 GOP/s, bf16 1,000.0 GFLOP/s" in table
