"""sample.py: streamed text equals the decoded tokens of model.generate, whole characters only, one-line errors."""

import dataclasses

import pytest
import torch

import sample
from cheapgpt2.checkpoint import load_checkpoint
from test_eval import one_error_line, tiny_gpt
from cheapgpt2.generate import generate
from cheapgpt2.tokenizer import EOT_TOKEN, get_encoding


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_gpt(block_size=32)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    return str(path)


def test_text_stream_prints_whole_characters_as_they_complete():
    enc = get_encoding()
    text = "naïve 世界 🙂 done"
    tokens = enc.encode(text)
    stream = sample.TextStream(enc)
    pieces = [stream.push(t) for t in tokens] + [stream.flush()]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert len(tokens) > len(text.split())  # some characters span several tokens: those pieces wait
    assert "" in pieces[:-1]
    # a character cut off at the end prints as U+FFFD
    stream = sample.TextStream(enc)
    assert stream.push(enc.encode("🙂")[0]) == "" and stream.flush() == "\ufffd"


def test_sample_streams_what_generate_returns(checkpoint, capsys):
    args = ["--prompt", "Once upon", "--max_new_tokens", "40", "--temperature", "0.9", "--top_k", "50",
            "--top_p", "0.95", "--seed", "3", "--device", "cpu"]
    assert sample.main([checkpoint, *args]) == 0
    out, err = capsys.readouterr()
    model, _ = load_checkpoint(checkpoint)
    enc = get_encoding()
    prompt = [EOT_TOKEN] + enc.encode("Once upon")
    torch.manual_seed(3)
    tokens = generate(model.eval(), torch.tensor([prompt]), 40, temperature=0.9, top_k=50, top_p=0.95)[0, len(prompt):]
    expected = b"".join(enc.decode_single_token_bytes(t) for t in tokens.tolist())
    assert out == "Once upon" + expected.decode("utf-8", errors="replace") + "\n"
    assert "prefill: 3 tokens" in err and "decode: 39 tokens" in err and "tokens/s" in err


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "   "], "prompt is empty"),
    (["--prompt", "word " * 40], "longer than the model's context of 32"),
    (["--prompt", "hi", "--top_p", "0"], "--top_p"),
])
def test_bad_prompts_and_options_are_one_line(checkpoint, capsys, argv, message):
    assert sample.main([checkpoint, *argv]) == 1
    assert message in one_error_line(capsys)


def test_a_bad_checkpoint_is_one_line(tmp_path, capsys):
    bogus = tmp_path / "ckpt.pt"
    bogus.write_text("not a checkpoint")
    assert sample.main([str(bogus), "--prompt", "hi"]) == 1
    assert "not a checkpoint" in one_error_line(capsys)
    assert sample.main([str(tmp_path / "missing.pt"), "--prompt", "hi"]) == 1
    assert "does not exist" in one_error_line(capsys)
