"""export_gguf.py: a GPT-2-architecture checkpoint as llama.cpp's GGUF, read back with the gguf package's own
reader: the architecture's metadata, GPT-2's tokenizer, and every tensor equal to the model's (f32), to half
precision (f16), to llama.cpp's Q8_0 of it (q8_0), or holding quantize.py's q4_0 and bf16 numbers (q4_0, bf16);
and, with a llama.cpp build, llama.cpp's greedy text on our files equal to model.py's."""

import dataclasses
import http.client
import json
import os

import numpy as np
import pytest
import torch

import export_gguf
from cheapgpt2 import gguf_file
from cheapgpt2.generate import generate
from cheapgpt2.model import GPT, GPTConfig
from cheapgpt2.quantize import q4_0_quantize, quantize
from test_model import randomize_

gguf = pytest.importorskip("gguf", reason="export_gguf.py's writer: pip install gguf (requirements-dev.txt)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=64))
    randomize_(model)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    return model, str(path)


def read(path):
    reader = gguf.GGUFReader(path)
    fields = {name: field for name, field in reader.fields.items()}

    def value(name):
        field = fields[name]
        return field.contents() if hasattr(field, "contents") else field.parts[field.data[0]]
    return reader, value


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0", "q4_0", "bf16"])
def test_the_gguf_file_holds_gpt2_as_llama_cpp_reads_it(checkpoint, tmp_path, dtype):
    model, ckpt = checkpoint
    out = str(tmp_path / "model.gguf")
    assert export_gguf.main([ckpt, out, "--dtype", dtype]) == 0
    reader, value = read(out)
    assert value("general.architecture") == "gpt2"
    assert (value("gpt2.context_length"), value("gpt2.embedding_length"), value("gpt2.block_count"),
            value("gpt2.attention.head_count"), value("gpt2.feed_forward_length")) == (32, 64, 2, 2, 256)
    assert value("tokenizer.ggml.model") == "gpt2"
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == 50257 and tokens[50256] == "<|endoftext|>" and tokens[464] == "The"
    assert len(value("tokenizer.ggml.merges")) == 50000  # r50k_base: 256 bytes + 50,000 merges + <|endoftext|>
    assert value("tokenizer.ggml.eos_token_id") == 50256
    tensors = {t.name: t for t in reader.tensors}
    expected = gguf_file.gguf_tensors(model)
    assert tensors.keys() == expected.keys()
    for name, want in expected.items():
        t = tensors[name]
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        if dtype == "f32" or want.ndim == 1 or (dtype in ("q4_0", "bf16") and name == "position_embd.weight"):
            np.testing.assert_array_equal(got, want, err_msg=name)
        elif dtype == "bf16":  # the engine's numbers: each weight rounded to the nearest bfloat16
            assert t.tensor_type == gguf.GGMLQuantizationType.BF16, name
            np.testing.assert_array_equal(got, torch.from_numpy(want).to(torch.bfloat16).float().numpy(), err_msg=name)
        elif dtype == "q4_0" and name.startswith("blk."):  # quantize.py's q4_0 values, the C engine's file's
            assert t.tensor_type == gguf.GGMLQuantizationType.Q4_0, name
            q, scale = q4_0_quantize(torch.from_numpy(want))
            ours = (q.float().reshape(want.shape[0], -1, 32) * scale[..., None]).reshape(want.shape).numpy()
            np.testing.assert_array_equal(got, ours, err_msg=name)
        elif dtype == "f16":
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), err_msg=name)
        else:  # Q8_0 (q4_0's embedding too): blocks of 32, scale max|w|/127 in fp16: half a step, plus its rounding
            assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0, name
            step = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            bound = step * (0.5 + 127 * 2.0 ** -11) + 1e-7
            assert (np.abs(got.reshape(-1, 32) - want.reshape(-1, 32)) <= bound).all(), name


def test_a_checkpoint_gpt2_cannot_hold_is_one_line(tmp_path, capsys):
    model = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=64, pos_emb="rope"))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    assert export_gguf.main([str(path), str(tmp_path / "model.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "RoPE" in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written left behind


LLAMACPP = os.environ.get("LLAMACPP", "")  # a llama.cpp build directory (bin/llama-server), as make bench_serve takes


@pytest.mark.skipif(not os.path.isfile(os.path.join(LLAMACPP, "bin", "llama-server")),
                    reason="set LLAMACPP to a llama.cpp build (bench_serve.py's docstring says how) to run the peer")
@pytest.mark.parametrize("dtype", ["f32", "q4_0", "bf16"])
def test_llama_cpp_continues_our_gguf_greedily_as_model_py(tmp_path, dtype):
    from measure import bench_serve
    from cheapgpt2.tokenizer import get_encoding
    torch.manual_seed(24 if dtype == "q4_0" else 16)  # a model whose greedy choices are never near a tie (below)
    model = GPT(GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=64))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.3)
            if name.endswith("weight") and ("ln" in name):
                p.add_(1.0)
    model.eval()
    ckpt, out = tmp_path / "ckpt.pt", str(tmp_path / "model.gguf")
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, ckpt)
    gguf_file.export(str(ckpt), out, dtype)
    reference = quantize(model, {"f32": "none", "q4_0": "q4_0", "bf16": "bf16"}[dtype])  # the numbers the file holds
    enc, prompt = get_encoding(), "The for statement"
    ids = enc.encode_ordinary(prompt)
    tokens = generate(reference, torch.tensor([ids]), 24, temperature=0)
    with torch.no_grad():
        top2 = torch.topk(reference(tokens)[0][0, len(ids) - 1:-1], 2, dim=-1).values
    # llama.cpp sums in another order: two logits 0.0006 apart were seen to swap (seed 1), 0.05 do not
    assert (top2[:, 0] - top2[:, 1]).min() > 0.05
    expected = enc.decode(tokens[0, len(ids):].tolist())
    with open(tmp_path / "server.log", "w") as log:
        proc, port = bench_serve.start_server("llama.cpp", out, 1, 1, 64, LLAMACPP, None, log)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            body = {"prompt": prompt, "max_tokens": 24, "temperature": 0, "top_k": 1}
            conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
            answer = json.loads(conn.getresponse().read())
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert answer["choices"][0]["text"] == expected
