"""gpt_decode_batch (c/gpt.c): one decode step for many generations at once gives each the logits it gets decoded
alone, for every option combination, 16 generations at different lengths, one of them past block_size."""

import subprocess

import pytest

from conftest import REPO, makefile_sources, march_native, needs_c_compiler
from test_c_engine import ENV, SPEEDRUN, config, random_model

from cheapgpt2 import engine_file

pytestmark = needs_c_compiler
# prompt lengths: 16 generations, all different; with 12 decode steps the 25-token one passes block_size (32)
LENGTHS = [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 15, 17, 20, 25]


def compile_driver(out, source):
    """A test driver (tests/c/) linked with the engine, under the sanitizers, with -march=native: the SIMD kernels
    this machine runs (matmul.c)."""
    cmd = ["gcc", "-O2", *march_native(), "-std=c11", "-Wall", "-Wextra", "-Wno-unknown-pragmas",
           "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-o", str(out), source,
           *[s for s in makefile_sources("C_SOURCES") if s != "c/run.c"], "-lm"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    return str(out)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    return compile_driver(tmp_path_factory.mktemp("batch") / "batch_decode", "tests/c/batch_decode.c")


def batch_difference(driver, model, tmp_path, lengths=LENGTHS, steps=12, dtype="fp32"):
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path, dtype=dtype, group_size=32)
    result = subprocess.run([driver, path, str(steps), *map(str, lengths)], capture_output=True, text=True, env=ENV,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    diff, scale = map(float, result.stdout.split())
    return diff, max(1.0, scale)


@pytest.mark.parametrize("options", [
    dict(), dict(pos_emb="rope", mlp="swiglu", norm="rmsnorm", qk_norm=True, tie_embeddings=False, bias=False),
    dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", logit_softcap=3.0), dict(vocab_size=50304, **SPEEDRUN)],
    ids=["gpt2", "llama-like", "relu2-softcap", "speedrun"])
@pytest.mark.parametrize("dtype", ["fp32", "q8_0"])
def test_a_batched_step_gives_every_generation_its_own_logits(driver, tmp_path, options, dtype):
    diff, scale = batch_difference(driver, random_model(config(**options), seed=11), tmp_path, dtype=dtype)
    # each row's sums run in the same order whatever else the pass carries (c/matmul.h): bit for bit
    assert diff == 0.0, f"max |batched - alone| = {diff:.3g} (scale {scale:.3g})"


def test_a_generation_alone_in_a_batch_is_bit_for_bit_gpt_decode(driver, tmp_path):
    # one row takes gpt_decode's very matrix-vector path
    diff, _ = batch_difference(driver, random_model(config(), seed=12), tmp_path, lengths=[9], steps=30)
    assert diff == 0.0


@pytest.fixture(scope="module")
def step_driver(tmp_path_factory):
    return compile_driver(tmp_path_factory.mktemp("step") / "step_mixed", "tests/c/step_mixed.c")


@pytest.mark.parametrize("chunk", [1, 3, 8, 13])
@pytest.mark.parametrize("options", [dict(), dict(vocab_size=50304, **SPEEDRUN)], ids=["gpt2", "speedrun"])
@pytest.mark.parametrize("dtype", ["fp32", "q8_0"])
def test_prompt_chunks_beside_decodes_give_each_generation_its_logits_alone(step_driver, tmp_path, options, dtype, chunk):
    """gpt_step as the server runs it: prompts arrive one step apart and go through in chunks beside the decode
    rows of the others; every generation's logits are bit for bit what it gets alone (each row's sums run in the
    same order whatever the pass carries), past block_size too (12 decodes after a 25-token prompt)."""
    path = str(tmp_path / "model.bin")
    engine_file.export(random_model(config(**options), seed=13), path, dtype=dtype, group_size=32)
    result = subprocess.run([step_driver, path, "12", str(chunk), *map(str, [25, 1, 9, 17, 4, 30, 2, 12])],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    diff, _ = map(float, result.stdout.split())
    assert diff == 0.0, f"max |mixed - alone| = {diff:.3g}"


@pytest.fixture(scope="module")
def cache_driver(tmp_path_factory):
    return compile_driver(tmp_path_factory.mktemp("cache") / "prefix_cache", "tests/c/prefix_cache.c")


@pytest.mark.parametrize("options", [dict(), dict(vocab_size=50304, **SPEEDRUN)], ids=["gpt2", "speedrun"])
@pytest.mark.parametrize("dtype", ["fp32", "q8_0"])
def test_reused_kv_rows_of_a_shared_prefix_give_a_fresh_states_logits(cache_driver, tmp_path, options, dtype):
    """The prompt cache's engine side: a state cut back to a shared prefix (gpt_state_truncate) or given another's
    first rows (gpt_state_copy_prefix), then fed the rest by chunks of 3, gives bit for bit the logits of a fresh
    state, at every split point of a 30-token prompt (with a document boundary in the speedrun family, whose masks
    and windows depend on the positions before) and for 6 decodes after it, past block_size (32); a state past
    block_size offers no rows."""
    path = str(tmp_path / "model.bin")
    engine_file.export(random_model(config(**options), seed=14), path, dtype=dtype, group_size=32)
    result = subprocess.run([cache_driver, path, "30", "6", "3"], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    diff, compared = result.stdout.split()
    assert float(diff) == 0.0 and int(compared) == 60, result.stdout
