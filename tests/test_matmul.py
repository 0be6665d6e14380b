"""The matmul kernels (c/matmul.c): each SIMD level held to the portable kernel on random matrices of odd shapes
(tests/c/matmul_test.c), built for this machine, for AVX2 and without SIMD, under the sanitizers too, for every
weight type; and c/gpt's prefill, whose rows fall on every tile edge, against model.py (fp32) and quantize.py's
q8_0, q4_0 and bf16 schemes.

    python -m pytest -q tests/test_matmul.py
"""

import subprocess

import numpy as np
import pytest
import torch

from conftest import REPO, build, march_native, needs_c_compiler
from cheapgpt2 import engine_file
from cheapgpt2.generate import generate
from cheapgpt2.quantize import quantize
from test_c_engine import ENV, NEW_TOKENS, SPEEDRUN, as_rows, c_generate, config, random_model, reference_logits

pytestmark = needs_c_compiler
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        return next((line.split(":")[1].split() for line in f if line.startswith("flags")), [])


def native_level():
    flags = set(cpu_flags())
    if not march_native():
        return "portable"
    if {"avx512f", "avx512bw", "avx512_vnni"} <= flags:
        return "avx512-vnni"
    return "avx2" if {"avx2", "fma"} <= flags else "portable"


# (name, gcc flags, the level the build must report); AVX2 builds only run on a CPU that has it
BUILDS = [("native", ["-O3", *march_native()], native_level()),
          ("avx2", ["-O3", "-march=haswell"], "avx2"),
          ("portable", ["-O3"], "portable"),
          ("native-sanitized", [*SANITIZE, *march_native()], native_level()),
          ("avx2-sanitized", [*SANITIZE, "-march=haswell"], "avx2")]


@pytest.mark.parametrize("name,flags,level", BUILDS, ids=[b[0] for b in BUILDS])
def test_each_kernel_matches_the_portable_kernel_on_odd_shapes(tmp_path, name, flags, level):
    if level == "avx2" and not {"avx2", "fma"} <= set(cpu_flags()):
        pytest.skip("this CPU has no AVX2/FMA to run the avx2 kernels")
    binary = str(tmp_path / "matmul_test")
    build = subprocess.run(["gcc", *flags, "-fopenmp", "-std=c11", "-Wall", "-Wextra", "-o", binary,
                            "tests/c/matmul_test.c", "c/matmul.c", "-lm"], cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0 and "warning" not in build.stderr, build.stderr
    result = subprocess.run([binary], capture_output=True, text=True, env={**ENV, "OMP_NUM_THREADS": "2"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["kernel"].startswith(f"fp32 and bf16 {level}" if level != "avx512-vnni" else "fp32 and bf16 avx512"), lines["kernel"]
    assert level in lines["kernel"]
    for dtype in ("fp32", "bf16", "q8_0", "q4_0"):
        _, error, _, alone = lines[dtype].split()
        # the int8 products are exact; what differs is the order of float sums: a few units in the last place
        assert float(error) < 1e-5, f"{dtype}: |kernel - portable| / sum|w x| = {error}"
        assert alone == "1", f"{dtype}: a token's outputs depend on the other rows of the call"
    assert float(lines["attention"].split()[1]) < 1e-5, lines["attention"]


# every tile edge: tiles of 4, 6 and 12 tokens, attention's groups of 8 queries and blocks of 64 keys
PROMPT_LENGTHS = [1, 2, 3, 5, 7, 8, 9, 15, 17, 31, 33, 63, 65, 127, 513]
BLOCK_SIZE = 600
# width 160: rows of 480, 160, 640 (not all multiples of a 32-row tile with vocab 100) and heads of 80 (a 64-wide
# vector block of attention's values and 16 more)
FAMILIES = {"gpt2": dict(),
            "llama-like": dict(pos_emb="rope", mlp="swiglu", norm="rmsnorm", qk_norm=True, tie_embeddings=False,
                               bias=False, logit_softcap=3.0),
            "relu2": dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True)}


def family_model(family, **overrides):
    cfg = config(block_size=BLOCK_SIZE, n_embd=160, n_head=2, vocab_size=100, **{**FAMILIES[family], **overrides})
    return random_model(cfg, seed=list(FAMILIES).index(family))


def check_rows(c_logits, ref, dtype, n, what, fp32_ref=None):
    """fp32: every row within 1e-4 of the largest logit. q8_0: the n prompt rows, the prefill's tiles, as
    test_c_engine's q8_0 test allows: an activation that sits on a rounding tie (x/scale within float noise of .5)
    rounds either way and moves a row by a quantization step; up to 65 tokens at most one such row and none
    beyond 2e-2. Over longer prompts the ties add up through attention, the portable kernel's too (measured at
    513 tokens, llama-like: 284 of 513 rows over 1e-3, max 0.0255 of 2.6), so there only the bound: 3e-2."""
    scale = max(1.0, np.abs(ref).max())
    row_diff = np.abs(as_rows(c_logits, ref) - ref).max(axis=1)
    if dtype in ("fp32", "bf16"):  # bf16: the fp32 kernel on bf16-rounded weights
        assert row_diff.max() <= 1e-4 * scale, f"{what}: max|C - PyTorch| = {row_diff.max():.3g}"
        return
    row_diff = row_diff[:n]
    if dtype == "q4_0":
        # A tie in an early layer moves its row's keys and values, and so every row after it a little: the bound
        # holds, and C sits ten times closer to the q4_0 scheme than the scheme sits to fp32 (measured: 30-50x)
        assert row_diff.max() <= 3e-2 * scale, f"{what}: max|C - PyTorch| = {row_diff.max():.3g}"
        c_rows, ref_rows, fp32_rows = as_rows(c_logits, ref)[:n], ref[:n], fp32_ref[:n]
        assert np.abs(c_rows - ref_rows).mean() <= 0.1 * np.abs(ref_rows - fp32_rows).mean(), f"{what}: not q4_0's logits"
        return
    if n <= 65:
        assert (row_diff > 1e-3 * scale).sum() <= 1, f"{what}: rows over 1e-3: {np.flatnonzero(row_diff > 1e-3 * scale)}"
        assert row_diff.max() <= 2e-2 * scale, f"{what}: max|C - PyTorch| = {row_diff.max():.3g}"
    else:
        assert row_diff.max() <= 3e-2 * scale, f"{what}: max|C - PyTorch| = {row_diff.max():.3g}"


SCHEME_OF = {"fp32": "none", "q8_0": "q8_0-g32", "q4_0": "q4_0", "bf16": "bf16"}  # quantize.py's, as exported


@pytest.mark.parametrize("family,dtype", [(family, dtype) for family in FAMILIES for dtype in ("fp32", "q8_0")] +
                         [("gpt2", "q4_0"), ("llama-like", "q4_0"), ("gpt2", "bf16"), ("llama-like", "bf16")])
def test_prefill_of_every_tile_edge_matches_the_reference(engine, tmp_path, family, dtype):
    model = family_model(family)
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path, dtype=dtype, group_size=32)
    reference = quantize(model, SCHEME_OF[dtype])
    tokens = torch.randint(0, 100, (BLOCK_SIZE,), generator=torch.Generator().manual_seed(9)).tolist()
    for n in PROMPT_LENGTHS:
        ids, c_logits = c_generate(engine, path, tokens[:n], tmp_path)
        ref = reference_logits(reference, tokens[:n] + ids[:-1], n)  # the last pick has no forward pass
        fp32_ref = reference_logits(model, tokens[:n] + ids[:-1], n) if dtype == "q4_0" else None
        check_rows(c_logits, ref, dtype, n, f"{family} {dtype} prompt of {n}", fp32_ref)


@pytest.mark.parametrize("dtype", ["fp32", "q8_0"])
def test_speedrun_options_at_tile_edges(engine, tmp_path, dtype):
    """Document masks and the window cut a group of queries' key ranges apart: GPT-2's vocabulary (for the
    <|endoftext|> that starts a document), prompts up to 65 tokens (each logits row is 50304 floats)."""
    cfg = config(block_size=128, n_embd=160, n_head=2, vocab_size=50304, n_layer=4, **SPEEDRUN)
    model = random_model(cfg, seed=7)
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path, dtype=dtype, group_size=32)
    reference = model if dtype == "fp32" else quantize(model, "q8_0-g32")
    tokens = torch.randint(0, 1000, (65,), generator=torch.Generator().manual_seed(3)).tolist()
    tokens[4] = tokens[11] = tokens[40] = 50256
    for n in [1, 2, 3, 5, 7, 8, 9, 15, 17, 31, 33, 63, 65]:
        ids, c_logits = c_generate(engine, path, tokens[:n], tmp_path)
        check_rows(c_logits, reference_logits(reference, tokens[:n] + ids[:-1], n), dtype, n,
                   f"speedrun {dtype} prompt of {n}")


@pytest.fixture(scope="module")
def engine_avx2(tmp_path_factory):
    """c/gpt with the AVX2 kernels, as an AVX2-only machine builds it."""
    if not {"avx2", "fma"} <= set(cpu_flags()):
        pytest.skip("this CPU has no AVX2/FMA to run the avx2 kernels")
    return build(tmp_path_factory.mktemp("c") / "gpt_avx2", "-O3 -march=haswell -fopenmp")


@pytest.mark.parametrize("dtype", ["fp32", "q8_0", "q4_0", "bf16"])
def test_the_avx2_build_prefills_every_tile_edge_too(engine_avx2, tmp_path, dtype):
    test_prefill_of_every_tile_edge_matches_the_reference(engine_avx2, tmp_path, "llama-like", dtype)


def test_prompt_one_past_block_size_is_model_generate(engine, tmp_path):
    model = family_model("gpt2")
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path)
    prompt = torch.randint(0, 100, (BLOCK_SIZE + 1,), generator=torch.Generator().manual_seed(4)).tolist()
    ids, _ = c_generate(engine, path, prompt, tmp_path, dump=False)
    assert ids == generate(model, torch.tensor([prompt]), NEW_TOKENS, temperature=0)[0, len(prompt):].tolist()
