"""Fixtures shared by test files: a learnable token corpus for train.py, and the C engine, built once per test
session by `make c` (the Makefile's flags)."""

import os
import shutil
import subprocess

import numpy as np
import pytest

from cheapgpt2.data import write_shard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_c_compiler = pytest.mark.skipif(shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None,
                                      reason="needs make and a C compiler")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A token stream with a period of 97 random tokens: learnable, so the loss must fall."""
    data_dir = tmp_path_factory.mktemp("corpus")
    pattern = np.random.default_rng(0).integers(0, 1000, size=97)
    stream = np.tile(pattern, 300).astype(np.uint16)
    write_shard(str(data_dir / "fixture_val_000000.bin"), stream[:3000])
    write_shard(str(data_dir / "fixture_train_000001.bin"), stream[3000:])
    return str(data_dir)


def makefile_sources(variable):
    """The C files of one of the Makefile's source lists (C_SOURCES: c/gpt, SERVER_SOURCES: c/gpt-server): the
    tests that compile with their own flags build what make builds."""
    with open(os.path.join(REPO, "Makefile")) as f:
        line = next(line for line in f if line.startswith(f"{variable} :="))
    return line.split(":=", 1)[1].split()


def march_native():
    """["-march=native"] where gcc takes it (the Makefile's default), else []: the flags of the SIMD kernels."""
    result = subprocess.run(["gcc", "-march=native", "-x", "c", "-c", "/dev/null", "-o", "/dev/null"], capture_output=True)
    return ["-march=native"] if result.returncode == 0 else []


def build(out_path, cflags=None):
    cmd = ["make", "-s", "-C", REPO, "c", f"C_OUT={out_path}"] + ([f"CFLAGS={cflags}"] if cflags else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr  # -Wall -Wextra clean
    return str(out_path)


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """c/gpt as `make c` builds it."""
    return build(tmp_path_factory.mktemp("c") / "gpt")


@pytest.fixture(scope="session")
def engine_asan(tmp_path_factory):
    """c/gpt under AddressSanitizer and UndefinedBehaviorSanitizer."""
    return build(tmp_path_factory.mktemp("c") / "gpt_asan", "-O1 -g -fopenmp -fsanitize=address,undefined -fno-omit-frame-pointer")
