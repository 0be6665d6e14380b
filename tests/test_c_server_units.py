"""The pure parts of c/gpt-server, without sockets: tests/c/server_test.c calls the HTTP head parser, the API key
check, the completion parser, the stop-string and UTF-8 hold-back, text_offset and the flag table directly, built
with -DTESTING (server.c without its main) under AddressSanitizer and UndefinedBehaviorSanitizer.

    python -m pytest -q tests/test_c_server_units.py
"""

import os
import subprocess

import pytest
import torch

from conftest import REPO, makefile_sources, needs_c_compiler
from cheapgpt2 import engine_file
from cheapgpt2.model import GPT, GPTConfig

pytestmark = needs_c_compiler


def test_the_servers_pure_parts(tmp_path):
    binary = str(tmp_path / "server_test")
    build = subprocess.run(["cc", "-std=c11", "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                            "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-DTESTING", "-o", binary,
                            "tests/c/server_test.c", *makefile_sources("SERVER_SOURCES"), "-lm", "-lpthread"],
                           cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0 and "warning" not in build.stderr, build.stderr
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=32))  # its tokenizer and context are what is used
    path = str(tmp_path / "tiny.bin")
    engine_file.export(model.eval(), path)
    result = subprocess.run([binary, path], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"))
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    passed, failed = (int(w) for w in result.stdout.splitlines()[-1].replace(",", "").split()[::2])
    assert failed == 0 and passed >= 80, result.stdout
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, result.stderr
