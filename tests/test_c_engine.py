"""The C engine (c/gpt, export.py) against its references: model.py for the logits and greedy continuations of
every variant, the q8_0 scheme of c/FORMAT.md for int8, tiktoken for the tokenizer; and bad files/arguments
(under -fsanitize=address,undefined) end in one error line, never a crash.

    python -m pytest -q tests/test_c_engine.py
    python -m pytest -q tests/test_c_engine.py -k tokenizer
"""

import argparse
import itertools
import os
import random
import re
import subprocess

import numpy as np
import pytest
import torch

import export
from cheapgpt2.model import GPT, GPTConfig
from cheapgpt2.quantize import quantize
from conftest import needs_c_compiler
from test_model import randomize_
from cheapgpt2 import engine_file
from cheapgpt2.generate import generate
from cheapgpt2.tokenizer import GPT2_VOCAB_SIZE, get_encoding

# passive: OpenMP threads that spin at barriers crawl when other jobs share the cores (CI, this machine)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive", "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
       "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
PROMPT_LEN, NEW_TOKENS = 20, 64

pytestmark = needs_c_compiler


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The reference forwards are tiny: one thread is faster than two on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(binary, *args, stdin=None, check=True):
    args = [a if isinstance(a, bytes) else str(a) for a in args]  # bytes: an argument that is not UTF-8
    result = subprocess.run([binary, *args], input=stdin, capture_output=True, env=ENV, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


def config(**overrides):
    return GPTConfig(**{**dict(block_size=32, vocab_size=96, n_layer=2, n_head=4, n_embd=64), **overrides})


def random_model(cfg, seed=0):
    model = GPT(cfg).eval()
    randomize_(model, seed)  # biases and norm gains random too: a mis-read tensor cannot hide
    return model


def c_generate(engine, path, prompt, tmp_path, dump=True, extra=()):
    """(generated ids, logits of every prompt position then of every decode step) from c/gpt, greedy."""
    dump_path = tmp_path / "logits.f32"
    args = [path, "--tokens", " ".join(map(str, prompt)), "-n", NEW_TOKENS, "-t", 0, "--print_ids", "--no_stop", *extra]
    out = run(engine, *args, *(["--dump_logits", dump_path] if dump else []))
    ids = [int(t) for t in out.stdout.split()]
    logits = np.fromfile(dump_path, dtype=np.float32) if dump else None
    return ids, logits


@torch.no_grad()
def reference_logits(model, tokens, n_prompt):
    """model.py's logits for what c/gpt dumps: every prompt position, then for each generated token the next-token
    logits given everything so far; past block_size, given the last block_size tokens (model.generate's idx_cond).
    Causal attention makes row p of one forward the logits given tokens[:p+1], so two forwards give them all."""
    T = model.config.block_size
    assert n_prompt <= T
    rows = [model(torch.tensor([tokens[:T]]))[0][0]]  # (min(len, T), vocab)
    windows = [tokens[end - T:end] for end in range(T + 1, len(tokens))]
    if windows:
        rows.append(model(torch.tensor(windows))[0][:, -1])  # (len(windows), vocab)
    logits = torch.cat(rows)
    # the tokenizer's tokens only: model.py puts the padding rows at -inf (no probability), c/gpt dumps them as
    # computed and leaves them out of sampling and log-probs; as_rows cuts c/gpt's dump the same way
    assert torch.isneginf(logits[:, GPT2_VOCAB_SIZE:]).all()
    return logits[:, :GPT2_VOCAB_SIZE].numpy()


def as_rows(c_logits, ref):
    """c/gpt's dumped logits (rows of the padded vocabulary) as ref's rows and columns."""
    return c_logits.reshape(ref.shape[0], -1)[:, :ref.shape[1]]


def greedy_path(ref_logits, n_prompt):
    """The tokens generate(model, temperature=0) picks along the reference rows: argmax of each next-token row."""
    return ref_logits[n_prompt - 1:].argmax(axis=-1).tolist()


def assert_close(c_logits, ref, rtol, what):
    c_logits = as_rows(c_logits, ref)
    diff = np.abs(c_logits - ref).max()
    scale = max(1.0, np.abs(ref).max())
    assert diff <= rtol * scale, f"{what}: max|C - PyTorch| = {diff:.3g}, allowed {rtol * scale:.3g}"


OPTION_GRID = list(itertools.product(("learned", "rope"), ("gelu", "swiglu", "relu2"), ("layernorm", "rmsnorm"),
                                     (False, True), (True, False), (True, False), (0.0, 3.0)))


@pytest.mark.parametrize("pos_emb,mlp,norm,qk_norm,tie,bias,softcap", OPTION_GRID,
                         ids=lambda v: str(v))
def test_fp32_logits_and_greedy_continuation_match_model_py(engine, tmp_path, pos_emb, mlp, norm, qk_norm, tie, bias, softcap):
    cfg = config(pos_emb=pos_emb, mlp=mlp, norm=norm, qk_norm=qk_norm, tie_embeddings=tie, bias=bias, logit_softcap=softcap)
    model = random_model(cfg, seed=OPTION_GRID.index((pos_emb, mlp, norm, qk_norm, tie, bias, softcap)))
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path)
    prompt = torch.randint(0, cfg.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(1)).tolist()
    # the prompt goes through one batched prefill, the rest through cached decode, past block_size (32) too
    ids, c_logits = c_generate(engine, path, prompt, tmp_path)
    ref = reference_logits(model, prompt + ids, PROMPT_LEN)
    assert_close(c_logits, ref, 1e-4, "fp32 logits")
    # every greedy pick of model.generate is the argmax of one of these rows (test_greedy_path_is_model_generate)
    assert ids == greedy_path(ref, PROMPT_LEN)[:NEW_TOKENS], "greedy continuation differs from generate(model, temperature=0)"


@pytest.mark.parametrize("pos_emb,mlp,norm", [("learned", "gelu", "layernorm"), ("rope", "relu2", "rmsnorm"), ("rope", "swiglu", "layernorm")])
def test_greedy_continuation_is_model_generate(engine, tmp_path, pos_emb, mlp, norm):
    """generate(model, temperature=0) itself, 64 tokens from a 20-token prompt with block_size 32."""
    model = random_model(config(pos_emb=pos_emb, mlp=mlp, norm=norm, qk_norm=True, logit_softcap=3.0), seed=5)
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path)
    prompt = list(range(3, 3 + PROMPT_LEN))
    ids, c_logits = c_generate(engine, path, prompt, tmp_path)
    expected = generate(model, torch.tensor([prompt]), NEW_TOKENS, temperature=0)[0, PROMPT_LEN:].tolist()
    assert ids == expected
    assert greedy_path(reference_logits(model, prompt + ids, PROMPT_LEN), PROMPT_LEN)[:NEW_TOKENS] == expected


SPEEDRUN = dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True, tie_embeddings=False, bias=False,
                logit_softcap=15.0, doc_mask=True, attn_window=12, value_embeds=True, unet_skips=True)


@pytest.mark.parametrize("n_layer,dtype", [(3, "fp32"), (4, "fp32"), (4, "q8_0")])
def test_speedrun_options_match_model_py(engine, tmp_path, n_layer, dtype):
    """Document masking, the window, value embeddings and U-net skips, in a prefill and in cached decoding past
    block_size (32): GPT-2's vocabulary, so that the prompt's <|endoftext|> (50256) starts a document."""
    model = random_model(config(vocab_size=50304, n_layer=n_layer, **SPEEDRUN), seed=7)
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path, dtype=dtype, group_size=32)
    prompt = torch.randint(0, 1000, (PROMPT_LEN,), generator=torch.Generator().manual_seed(3)).tolist()
    prompt[6] = prompt[15] = 50256
    ids, c_logits = c_generate(engine, path, prompt, tmp_path)
    reference = model if dtype == "fp32" else quantize(model, "q8_0-g32")
    ref = reference_logits(reference, prompt + ids, PROMPT_LEN)
    assert_close(c_logits, ref, 1e-4 if dtype == "fp32" else 2e-2, f"{dtype} logits")
    if dtype == "fp32":
        assert ids == greedy_path(ref, PROMPT_LEN)[:NEW_TOKENS]
    # the test can fail: the same file without the document mask gives other logits after position 6
    no_mask = random_model(config(vocab_size=50304, n_layer=n_layer, **{**SPEEDRUN, "doc_mask": False}), seed=7)
    assert np.abs(reference_logits(no_mask, prompt + ids, PROMPT_LEN)[6:PROMPT_LEN] - ref[6:PROMPT_LEN]).max() > 1e-3


def test_prompt_longer_than_block_size_keeps_its_last_tokens(engine, tmp_path):
    """A prompt past block_size is cut to its last block_size tokens, as model.generate does."""
    model = random_model(config(block_size=16))
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path)
    prompt = list(range(1, 41))
    ids, _ = c_generate(engine, path, prompt, tmp_path, dump=False)
    assert ids == generate(model, torch.tensor([prompt]), NEW_TOKENS, temperature=0)[0, len(prompt):].tolist()


# ----------------------------------------------------------------------------
# q8_0: the kernel against quantize.py's q8_0 model in PyTorch, not against fp32


@pytest.mark.parametrize("pos_emb,mlp,norm,tie,group_size", [
    ("learned", "gelu", "layernorm", True, 64), ("rope", "swiglu", "rmsnorm", False, 32),
    ("rope", "relu2", "rmsnorm", True, 32), ("learned", "swiglu", "layernorm", False, 64)])
def test_q8_0_logits_match_the_scheme_in_pytorch(engine, tmp_path, pos_emb, mlp, norm, tie, group_size):
    cfg = config(pos_emb=pos_emb, mlp=mlp, norm=norm, tie_embeddings=tie, qk_norm=norm == "rmsnorm",
                 logit_softcap=3.0 if not tie else 0.0)
    model = random_model(cfg, seed=3)
    path = str(tmp_path / "model_q8.bin")
    engine_file.export(model, path, dtype="q8_0", group_size=group_size)
    prompt = torch.randint(0, cfg.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(2)).tolist()
    ids, c_logits = c_generate(engine, path, prompt, tmp_path)
    reference = quantize(model, "q8_0" if group_size == 64 else "q8_0-g32")  # quantize.py: the scheme's definition
    ref = reference_logits(reference, prompt + ids, PROMPT_LEN)
    # An activation whose x/scale sits within float32 noise of a .5 rounds either way (the two sides sum in different
    # orders): that moves the logits of that one position by up to a quantization step. Every other row: <= 1e-3.
    scale = max(1.0, np.abs(ref).max())
    row_diff = np.abs(as_rows(c_logits, ref) - ref).max(axis=1)
    assert (row_diff > 1e-3 * scale).sum() <= 1, f"q8_0 logits: rows over 1e-3: {np.flatnonzero(row_diff > 1e-3 * scale)}, max {row_diff.max():.3g}"
    assert row_diff.max() <= 2e-2 * scale, f"q8_0 logits: max|C - PyTorch| = {row_diff.max():.3g}"
    fp32 = reference_logits(model, prompt + ids, PROMPT_LEN)
    assert np.abs(as_rows(c_logits, fp32) - fp32).max() > 1e-4, "q8_0 file gave fp32 logits: was it quantized?"


def test_q8_0_portable_kernel_matches_the_scheme_too(engine_asan, tmp_path):
    """The sanitizer build has no -march=native: its q8_0 matmul is the plain C loop, not the AVX2 one."""
    model = random_model(config(pos_emb="rope", mlp="swiglu", norm="rmsnorm", tie_embeddings=True), seed=4)
    path = str(tmp_path / "model_q8.bin")
    engine_file.export(model, path, dtype="q8_0", group_size=64)
    prompt = list(range(5, 5 + PROMPT_LEN))
    ids, c_logits = c_generate(engine_asan, path, prompt, tmp_path)
    ref = reference_logits(quantize(model, "q8_0"), prompt + ids, PROMPT_LEN)
    row_diff = np.abs(as_rows(c_logits, ref) - ref).max(axis=1)
    assert (row_diff > 1e-3 * max(1.0, np.abs(ref).max())).sum() <= 1, row_diff.max()


# ----------------------------------------------------------------------------
# q4_0 and bf16: the kernels against quantize.py's schemes in PyTorch


def assert_scheme_close(c_logits, ref, fp32, dtype):
    """bf16 is the fp32 kernel on bf16-rounded weights: fp32's tolerance. q4_0: an activation whose x/scale sits
    within float32 noise of a .5 rounds either way (the two sides sum in different orders), which moves that
    position's logits by up to a quantization step, and when it falls in an early layer every later row a little
    (they attend to its keys and values): none over 2e-2, and C ten times closer to the q4_0 scheme than the scheme
    is to fp32 (tests/test_matmul.py measured 30-50x)."""
    c_logits = as_rows(c_logits, ref)
    diff, scale = np.abs(c_logits - ref), max(1.0, np.abs(ref).max())
    if dtype == "bf16":
        assert diff.max() <= 1e-4 * scale, f"bf16 logits: max|C - PyTorch| = {diff.max():.3g}"
    else:
        assert diff.max() <= 2e-2 * scale, f"{dtype}: max|C - PyTorch| = {diff.max():.3g}"
        assert diff.mean() <= 0.1 * np.abs(ref - fp32).mean(), f"{dtype}: the logits are not the scheme's"
    assert np.abs(c_logits - fp32).max() > 1e-4, f"the {dtype} file gave fp32 logits"


@pytest.mark.parametrize("dtype,pos_emb,mlp,norm,tie", [
    ("q4_0", "learned", "gelu", "layernorm", True), ("q4_0", "rope", "swiglu", "rmsnorm", False),
    ("q4_0", "rope", "relu2", "rmsnorm", True), ("bf16", "learned", "gelu", "layernorm", True),
    ("bf16", "rope", "swiglu", "rmsnorm", False), ("bf16", "rope", "relu2", "rmsnorm", True)])
def test_q4_0_and_bf16_logits_match_their_schemes_in_pytorch(engine, tmp_path, dtype, pos_emb, mlp, norm, tie):
    cfg = config(pos_emb=pos_emb, mlp=mlp, norm=norm, tie_embeddings=tie, qk_norm=norm == "rmsnorm",
                 logit_softcap=3.0 if not tie else 0.0)
    model = random_model(cfg, seed=5)
    path = str(tmp_path / f"model_{dtype}.bin")
    engine_file.export(model, path, dtype=dtype)
    prompt = torch.randint(0, cfg.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(6)).tolist()
    ids, c_logits = c_generate(engine, path, prompt, tmp_path)
    ref = reference_logits(quantize(model, dtype), prompt + ids, PROMPT_LEN)
    assert_scheme_close(c_logits, ref, reference_logits(model, prompt + ids, PROMPT_LEN), dtype)
    if dtype == "bf16":
        assert ids == greedy_path(ref, PROMPT_LEN)[:NEW_TOKENS]


@pytest.mark.parametrize("dtype", ["q4_0", "bf16"])
def test_q4_0_and_bf16_portable_kernels_match_the_schemes_too(engine_asan, tmp_path, dtype):
    """The sanitizer build has no -march=native: its kernels are the plain C loops on the file's layout."""
    model = random_model(config(pos_emb="rope", mlp="swiglu", norm="rmsnorm", tie_embeddings=True), seed=8)
    path = str(tmp_path / f"model_{dtype}.bin")
    engine_file.export(model, path, dtype=dtype)
    prompt = list(range(5, 5 + PROMPT_LEN))
    ids, c_logits = c_generate(engine_asan, path, prompt, tmp_path)
    assert_scheme_close(c_logits, reference_logits(quantize(model, dtype), prompt + ids, PROMPT_LEN),
                        reference_logits(model, prompt + ids, PROMPT_LEN), dtype)


def test_q8_0_export_refuses_widths_not_divisible_by_group_size(tmp_path):
    model = random_model(config(n_embd=48, n_head=4))
    with pytest.raises(ValueError, match="divisible by group_size"):
        engine_file.export(model, str(tmp_path / "m.bin"), dtype="q8_0", group_size=32)


# ----------------------------------------------------------------------------
# the tokenizer against tiktoken


def varied_lines(n_lines, seed=0):
    """n_lines of bytes: English prose, Python source, many scripts and numerals, emoji, whitespace runs,
    contractions, and random bytes (invalid UTF-8), mixed."""
    import inspect
    import pydoc_data.topics
    rng = random.Random(seed)
    prose = [line for text in pydoc_data.topics.topics.values() for line in text.splitlines() if line.strip()]
    code = [line for module in (inspect, random, subprocess, argparse) for line in inspect.getsource(module).splitlines()]
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x530, 0x58F), (0x590, 0x5FF),
              (0x600, 0x6FF), (0x900, 0x97F), (0x980, 0x9FF), (0xE00, 0xE7F), (0x10A0, 0x10FF), (0x1100, 0x11FF),
              (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x2000, 0x206F),
              (0x2150, 0x218B), (0x2460, 0x24FF), (0xFF00, 0xFFEF), (0x300, 0x36F), (0x1D400, 0x1D7FF)]
    numerals = "0123456789٠١٢٣٤٥٦٧٨٩०१२३४५६७८९০১২৩৪৫৬৭৮৯๐๑๒๓๔๕๖๗๘๙０１２３４５６７８９ⅠⅡⅢⅫↁ½¾²³¹①②⑳"
    spaces = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c", "\x1c", "\x85", "\u200b", "   \n "]
    contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "''", "'x"]
    emoji = ["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🚀", "🤖"]

    def random_text():
        parts = []
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            if kind < 0.35:
                lo, hi = rng.choice(blocks)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
            elif kind < 0.5:
                parts.append("".join(rng.choice(numerals) for _ in range(rng.randint(1, 6))))
            elif kind < 0.7:
                parts.append(rng.choice(spaces) * rng.randint(1, 3))
            elif kind < 0.8:
                parts.append(rng.choice(contractions))
            elif kind < 0.9:
                parts.append(rng.choice(emoji))
            else:
                parts.append(rng.choice(prose).split(" ", 1)[-1][:20])
        return "".join(parts).encode("utf-8", errors="surrogatepass")

    lines = []
    for i in range(n_lines):
        kind = i % 6
        if kind == 0:
            lines.append(rng.choice(prose).encode())
        elif kind == 1:
            lines.append("\n".join(rng.choice(code) for _ in range(rng.randint(1, 4))).encode())
        elif kind in (2, 3):
            lines.append(random_text())
        elif kind == 4:
            lines.append(rng.randbytes(rng.randint(1, 40)))
        else:  # valid text with invalid bytes in it
            text = random_text()
            cut = rng.randint(0, len(text))
            lines.append(text[:cut] + rng.randbytes(rng.randint(1, 3)) + text[cut:])
    return lines


@pytest.fixture(scope="module")
def tokenizer_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tok") / "model.bin")
    engine_file.export(random_model(config()), path)
    return path


def test_tokenizer_matches_tiktoken_on_varied_text(engine, tokenizer_model):
    enc = get_encoding()
    lines = varied_lines(12000)
    out = run(engine, tokenizer_model, "--encode", stdin=b"".join(line.hex().encode() + b"\n" for line in lines))
    results = out.stdout.decode().split("\n")[:-1]
    assert len(results) == len(lines)
    mismatches = []
    for line, result in zip(lines, results):
        ids_text, decoded_hex = result.split("\t")
        ids = [int(t) for t in ids_text.split()]
        # tiktoken's encode takes str; its byte-level entry point (valid UTF-8: the same as encode_ordinary) is _encode_bytes
        expected = enc._encode_bytes(line)
        if ids != expected or bytes.fromhex(decoded_hex) != line:
            mismatches.append((line, ids, expected))
    assert not mismatches, f"{len(mismatches)} of {len(lines)} lines differ, first: {mismatches[0]}"


def test_tokenizer_edge_cases(engine, tokenizer_model):
    enc = get_encoding()
    cases = [b"", b" ", b"  ", b"a  b", b"a \n b", b"\n\n\n", b"<|endoftext|>", b"don't I'll we've", b"x" * 3000,
             b"  \xff", b"\xff", b"hello \xff\xfe world", b"abc\xe2\x82", b"\xf0\x9f\x98", b"1234567890" * 20,
             "é".encode("utf-8") * 100, b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]
    out = run(engine, tokenizer_model, "--encode", stdin=b"".join(c.hex().encode() + b"\n" for c in cases))
    for case, result in zip(cases, out.stdout.decode().split("\n")):
        ids = [int(t) for t in result.split("\t")[0].split()]
        assert ids == enc._encode_bytes(case), case


def test_text_prompt_is_encoded_as_tiktoken_does(engine, tmp_path):
    """-p goes through the C tokenizer: the greedy continuation of a text prompt equals the ids prompt's."""
    enc = get_encoding()
    model = random_model(config(vocab_size=enc.n_vocab, n_embd=32, block_size=64))
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path)
    text = "Hello, world! It's 2024 and ünïcödé works."
    by_text = run(engine, path, "-p", text, "-n", 8, "-t", 0, "--print_ids", "--no_stop").stdout.split()
    by_ids = run(engine, path, "--tokens", " ".join(map(str, enc.encode(text))), "-n", 8, "-t", 0, "--print_ids", "--no_stop").stdout.split()
    assert by_text == by_ids


# ----------------------------------------------------------------------------
# sampling, the command line, and bad input


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("small") / "model.bin")
    engine_file.export(random_model(config(vocab_size=300)), path)
    return path


def sample_ids(engine, path, *flags):
    return run(engine, path, "--tokens", "1 2 3", "-n", 30, "--print_ids", "--no_stop", *flags).stdout.split()


def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy(engine, small_model):
    a = sample_ids(engine, small_model, "-t", 1.0, "-s", 7)
    assert a == sample_ids(engine, small_model, "-t", 1.0, "-s", 7)
    assert a != sample_ids(engine, small_model, "-t", 1.0, "-s", 8)
    greedy = sample_ids(engine, small_model, "-t", 0)
    assert sample_ids(engine, small_model, "-t", 1.0, "-k", 1, "-s", 3) == greedy
    assert sample_ids(engine, small_model, "-t", 1.0, "--top_p", 1e-6, "-s", 3) == greedy


def test_sampling_follows_the_distribution(engine, tmp_path):
    """A model whose final norm ignores its input predicts the same distribution after every token, so one run of
    3000 samples measures it: temperature, top-k and top-p frequencies match softmax(logits / T) cut as specified."""
    model = random_model(config(vocab_size=8, block_size=4, n_layer=1, n_embd=16, n_head=2, tie_embeddings=False))
    designed = torch.tensor([2.0, 1.6, 1.2, 0.8, 0.4, 0.0, -0.4, -0.8])
    with torch.no_grad():  # the final LayerNorm outputs ones whatever comes in; each head row sums to its logit
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.copy_(designed[:, None].expand(8, 16) / 16)
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path)
    logits = model(torch.tensor([[0]]))[0][0, 0].detach().double()
    assert torch.allclose(logits, designed.double(), atol=1e-5)
    probs = torch.softmax(logits / 0.7, -1)  # about .44 .25 .14 .08 .05 ...
    order = probs.argsort(descending=True)

    def kept(top_k, top_p):
        """top-k first, then the fewest most likely tokens whose renormalized probability reaches top_p."""
        p = probs[order[:top_k]] / probs[order[:top_k]].sum()
        return min(top_k, int((p.cumsum(0) < top_p).sum()) + 1)

    for flags, keep in [((), 8), (("-k", 3), 3), (("--top_p", 0.45), kept(8, 0.45)), (("--top_p", 0.8), kept(8, 0.8)),
                        (("-k", 3, "--top_p", 0.8), kept(3, 0.8))]:
        mask = torch.zeros(8, dtype=torch.bool)
        mask[order[:keep]] = True
        expected = torch.where(mask, probs, 0)
        expected = (expected / expected.sum()).numpy()
        out = run(engine, path, "--tokens", "0", "-n", 3000, "-t", 0.7, "-s", 1, "--print_ids", "--no_stop", *flags)
        counts = np.bincount([int(t) for t in out.stdout.split()], minlength=8)
        assert counts[~mask.numpy()].sum() == 0, (flags, counts)
        assert np.abs(counts / counts.sum() - expected).max() < 0.035, (flags, counts / counts.sum(), expected)


def test_stops_at_end_of_text(engine, tmp_path):
    """Without --no_stop, generation ends at <|endoftext|>: a model that always predicts it prints nothing."""
    model = random_model(config(vocab_size=50304, n_embd=32, n_layer=1, block_size=8, tie_embeddings=False))
    with torch.no_grad():  # the final LayerNorm outputs ones, and only <|endoftext|>'s head row sees them
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[50256] = 1.0
    path = str(tmp_path / "model.bin")
    engine_file.export(model, path)
    assert run(engine, path, "-p", "Hi", "-n", 10, "-t", 0, "--print_ids").stdout.split() == []
    assert len(run(engine, path, "-p", "Hi", "-n", 10, "-t", 0, "--print_ids", "--no_stop").stdout.split()) == 10


def test_bench_reports_speeds_and_memory(engine, small_model):
    parent_memory = b"\1" * (256 << 20)  # this process's peak is now past 256 MB; the engine must not report it as its own
    out = run(engine, small_model, "--bench", "--prompt_len", 20, "-n", 16).stdout.decode()
    for field in ("prefill 20 tokens", "tok/s", "time to first token", "decode 15 tokens", "peak memory"):
        assert field in out, out
    peak_mb = float(re.search(r"peak memory ([\d.]+) MB", out)[1])
    assert 0 < peak_mb < 64, out  # a model of a few hundred kB in a small program
    del parent_memory


def test_bench_names_its_kernels_and_profiles_where_the_time_went(engine, small_model):
    out = run(engine, small_model, "--bench", "--profile", "--prompt_len", 20, "-n", 16).stdout.decode()
    assert re.search(r"^kernels fp32 and bf16 (avx512|avx2|portable).* \| open [\d.]+ s, of which the repacked weights: [\d.]+ MB$",
                     out, re.M), out
    for phase in ("prefill", "decode"):
        parts = re.search(rf"^profile {phase}: matmuls ([\d.]+) ms \((\d+)%\) \| attention ([\d.]+) ms \((\d+)%\) \| "
                          rf"head ([\d.]+) ms \((\d+)%\) \| other (-?[\d.]+) ms \((-?\d+)%\)$", out, re.M)
        assert parts, out
        seconds = [float(parts[i]) for i in (1, 3, 5, 7)]
        assert seconds[0] > 0 and seconds[2] > 0 and min(seconds) > -1e-3, out  # the parts are times, the rest too (ms)
        assert 97 <= sum(int(parts[i]) for i in (2, 4, 6, 8)) <= 103, out


def test_peak_probe_reports_this_machines_rates(engine):
    out = run(engine, "--peak", "--threads", 1).stdout.decode()
    match = re.fullmatch(r"peak fp32 ([\d.]+) GFLOP/s \| int8 ([\d.]+) GOP/s \| kernels fp32 .*\n", out)
    assert match and float(match[1]) > 0.1 and float(match[2]) > 0.1, out


def assert_one_error_line(result):
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 1, (result.returncode, stderr)
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr


def test_truncated_and_corrupted_files_give_one_error_line(engine_asan, tmp_path):
    model = random_model(config(pos_emb="rope", mlp="swiglu"))
    good = tmp_path / "good.bin"
    engine_file.export(model, str(good))
    data = good.read_bytes()
    bad = tmp_path / "bad.bin"
    rng = random.Random(0)
    cases = [data[:n] for n in (0, 3, 100, 255, 256, 300, len(data) // 2, len(data) - 1)]
    cases.append(b"\x7fELF" + data[4:])  # wrong magic
    cases.append(data[:4] + (3).to_bytes(4, "little") + data[8:])  # a newer version
    cases.append(data + b"\0" * 64)  # longer than the header says
    for field in range(16):  # every int field of the header set to nonsense
        for value in (0, -1, 2**31 - 1, 7):
            offset = 8 + 4 * field
            candidate = data[:offset] + value.to_bytes(4, "little", signed=True) + data[offset + 4:]
            if candidate != data:
                cases.append(candidate)
    for offset in (72, 76, 80, 84, 88, 96, 104):  # floats and 64-bit offsets
        cases.append(data[:offset] + b"\xff\xff\xff\x7f" + data[offset + 4:])
    tokenizer_offset = int.from_bytes(data[88:96], "little")
    for offset in range(tokenizer_offset, tokenizer_offset + 24, 4):  # the tokenizer table's header
        cases.append(data[:offset] + b"\xff\xff\xff\x0f" + data[offset + 4:])
    for case in cases:
        bad.write_bytes(case)
        result = run(engine_asan, bad, "--tokens", "1 2", "-n", 3, "-t", 0, check=False)
        if result.returncode == 0:  # a change the format can't see (say n_head 7 -> still valid? no): must not crash
            assert b"Sanitizer" not in result.stderr and b"runtime error" not in result.stderr
            continue
        assert_one_error_line(result)
    # random damage anywhere in the weights: no check can see it, but nothing may crash
    for _ in range(3):
        damaged = bytearray(data)
        for _ in range(200):
            damaged[rng.randrange(256, tokenizer_offset)] = rng.randrange(256)
        bad.write_bytes(bytes(damaged))
        result = run(engine_asan, bad, "--tokens", "1 2 3", "-n", 5, check=False)
        assert result.returncode == 0, result.stderr.decode(errors="replace")


def test_generation_under_sanitizers(engine_asan, tmp_path):
    model = random_model(config(pos_emb="rope", mlp="swiglu", norm="rmsnorm", qk_norm=True, tie_embeddings=False))
    for dtype in ("fp32", "q8_0"):  # sampling with every cut, past block_size, two threads
        path = str(tmp_path / f"{dtype}.bin")
        engine_file.export(model, path, dtype=dtype, group_size=32)
        run(engine_asan, path, "--tokens", "1 2 3 4 5", "-n", 40, "-t", 0.9, "-k", 5, "--top_p", 0.9, "-s", 1, "--no_stop", "--threads", 2)
    path = str(tmp_path / "gpt2_vocab.bin")  # a text prompt with invalid UTF-8, streamed back as text
    engine_file.export(random_model(config(vocab_size=50304, n_embd=32, n_layer=1)), path)
    assert run(engine_asan, path, "-p", b"Hello \xff world", "-n", 4, "-t", 0, "--no_stop").stdout.startswith(b"Hello \xff world")


@pytest.mark.parametrize("args", [[], ["MISSING.bin"], ["{model}", "-n", "many"], ["{model}", "-t", "-1"],
                                  ["{model}", "--top_p", "2"], ["{model}", "--frobnicate"], ["{model}", "-n"],
                                  ["{model}", "--tokens", "1 x"], ["{model}", "--tokens", "5000"], ["{dir}"],
                                  ["{model}", "{model}"], ["{model}", "--threads", "0"], ["{model}", "--profile"]])
def test_bad_arguments_give_one_error_line(engine_asan, small_model, tmp_path, args):
    args = [a.format(model=small_model, dir=tmp_path) for a in args]
    assert_one_error_line(run(engine_asan, *args, check=False))


def test_export_cli_errors_and_writes_a_file(tmp_path, capsys):
    assert export.main([str(tmp_path / "missing.pt"), str(tmp_path / "out.bin")]) == 1
    assert "error:" in capsys.readouterr().err
    assert export.main([str(tmp_path / "out.bin")]) == 1  # neither checkpoint nor --hf


def test_help_lists_every_flag_and_exits_0(engine):
    result = subprocess.run([engine, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: gpt MODEL.bin"), result.stdout + result.stderr
    for flag in ("-p", "-n", "-t", "-k", "--top_p", "-s", "--threads", "--no_stop", "--bench", "--prompt_len", "--profile",
                 "--peak", "--tokens", "--print_ids", "--dump_logits", "--encode"):
        assert f"\n  {flag} " in result.stdout, flag
