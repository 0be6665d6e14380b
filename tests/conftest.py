"""Fixtures shared by test files: the C engine, built once per test session by `make c` (the Makefile's flags)."""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_c_compiler = pytest.mark.skipif(shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None,
                                      reason="needs make and a C compiler")


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
