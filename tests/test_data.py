"""
Specification of prepare_data.py (text -> token shards) and data.py (shard format, ShardLoader).

CPU only, no network: the Hugging Face stream is replaced by an in-memory one; Tiny Shakespeare
in ../shared/data is used when present.

    python -m pytest -q tests/test_data.py
"""

import errno
import glob
import json
import os
import random
import runpy
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cheapgpt2 import data
import prepare_data
from cheapgpt2.data import ShardLoader, read_header, read_shard, write_shard
from cheapgpt2.tokenizer import EOT_TOKEN, get_encoding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt")

# Documents that exercise the tokenizer: an empty one, special-token text, unicode, blank lines, a long one.
DOCUMENTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "",
    "A document that mentions <|endoftext|> as plain text, and ends without a newline",
    "Ünïcödé ✓ 中文 — emoji 🙂 and\ttabs\r\nand CRLF line ends\r\n",
    " leading space, digits 12345 67, contractions: it's we'll they'd I'm\n\n\n  \n",
    "\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i * i}." for i in range(60)),
]


def expected_tokens(documents):
    """The reference stream: tiktoken's own encoding of each document, <|endoftext|> before each one."""
    encoding = get_encoding()
    return np.array([t for doc in documents for t in [EOT_TOKEN, *encoding.encode_ordinary(doc)]], dtype=np.uint16)


def write_jsonl(path, documents, field="text"):
    with open(path, "w") as f:
        for doc in documents:
            f.write(json.dumps({"id": 0, field: doc}) + "\n")
    return str(path)


def shard_files(out_dir):
    return sorted(glob.glob(os.path.join(out_dir, "*.bin")))


def stream_of(out_dir):
    """All tokens of out_dir's shards, in the manifest's order, read through the header reader."""
    with open(os.path.join(out_dir, "manifest.json")) as f:
        manifest = json.load(f)
    return np.concatenate([read_shard(os.path.join(out_dir, s["file"])) for s in manifest["shards"]]), manifest


def file_bytes(out_dir):
    return {os.path.basename(p): open(p, "rb").read() for p in shard_files(out_dir)}


def run(*argv):
    """prepare_data.py's main; the inputs here are deliberately tiny, so the one-batch check is off unless a test sets it."""
    return prepare_data.main(["--min_batch_tokens", "0", *map(str, argv)])


# -----------------------------------------------------------------------------
# prepare_data.py: what the shards hold


def test_shards_decode_to_tiktoken_tokens_with_eot_before_each_document(tmp_path):
    inputs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS)
    out_dir = tmp_path / "out"
    assert run("--input", inputs, "--out_dir", out_dir, "--shard_tokens", 300, "--val_tokens", 120, "--workers", 1) == 0

    tokens, manifest = stream_of(out_dir)
    np.testing.assert_array_equal(tokens, expected_tokens(DOCUMENTS))
    names = [s["file"] for s in manifest["shards"]]
    assert names[0] == "docs_val_000000.bin" and names[1] == "docs_train_000001.bin"
    assert names[2:] == [f"docs_train_{i:06d}.bin" for i in range(2, len(names))]
    assert [s["tokens"] for s in manifest["shards"][:-1]] == [120] + [300] * (len(names) - 2)
    assert all(s["documents"] == np.count_nonzero(read_shard(os.path.join(out_dir, s["file"])) == EOT_TOKEN)
               for s in manifest["shards"])
    assert manifest["documents"] == len(DOCUMENTS)
    assert manifest["tokens"] == {"val": 120, "train": len(tokens) - 120}
    assert manifest["settings"]["tokenizer"]["encoding"] == "r50k_base"
    assert "--val_tokens 120" in manifest["command"]


def test_local_files_give_val_ten_percent_of_the_tokens_by_default(tmp_path):
    inputs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS)
    assert run("--input", inputs, "--out_dir", tmp_path / "out", "--workers", 1) == 0
    tokens, manifest = stream_of(tmp_path / "out")
    assert [s["split"] for s in manifest["shards"]] == ["val", "train"]
    assert manifest["shards"][0]["tokens"] == len(tokens) // 10


def test_inputs_keep_their_order_and_a_glob_expands_sorted(tmp_path):
    (tmp_path / "txt").mkdir()
    for name, doc in [("b.txt", DOCUMENTS[3]), ("a.txt", DOCUMENTS[0]), ("c.txt", DOCUMENTS[5])]:
        (tmp_path / "txt" / name).write_text(doc, encoding="utf-8")
    jsonl = write_jsonl(tmp_path / "z.jsonl", DOCUMENTS[2:3])
    out_dir = tmp_path / "out"
    assert run("--input", jsonl, tmp_path / "txt" / "*.txt", "--out_dir", out_dir, "--workers", 1) == 0
    tokens, _ = stream_of(out_dir)
    np.testing.assert_array_equal(tokens, expected_tokens([DOCUMENTS[2], DOCUMENTS[0], DOCUMENTS[3], DOCUMENTS[5]]))


def test_parquet_rows_are_documents_read_from_text_field(tmp_path):
    import pyarrow
    import pyarrow.parquet

    path = str(tmp_path / "docs.parquet")
    pyarrow.parquet.write_table(pyarrow.table({"content": DOCUMENTS, "n": list(range(len(DOCUMENTS)))}), path, row_group_size=2)
    assert run("--input", path, "--text_field", "content", "--out_dir", tmp_path / "out", "--workers", 1) == 0
    tokens, manifest = stream_of(tmp_path / "out")
    np.testing.assert_array_equal(tokens, expected_tokens(DOCUMENTS))
    assert manifest["settings"]["prefix"] == "docs"


def test_output_is_identical_whatever_the_worker_count_and_task_size(tmp_path, monkeypatch):
    inputs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS * 3)
    assert run("--input", inputs, "--out_dir", tmp_path / "one", "--shard_tokens", 500, "--workers", 1) == 0
    monkeypatch.setattr(prepare_data, "TASK_CHARS", 40)  # many tasks, and long documents cut into pieces
    assert run("--input", inputs, "--out_dir", tmp_path / "two", "--shard_tokens", 500, "--workers", 2) == 0
    assert file_bytes(tmp_path / "one") == file_bytes(tmp_path / "two")
    np.testing.assert_array_equal(stream_of(tmp_path / "two")[0], expected_tokens(DOCUMENTS * 3))


def test_cutting_a_document_into_pieces_keeps_its_tokens():
    encoding = get_encoding()
    alphabet = ["a", "Bc", "12", " ", "  ", "\n", "\n\n", "'s", "'ll", ".", "!?", "é", "中", "\t", "\r\n", "\xa0", "\x1c", "🙂"]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        pieces = prepare_data.split_document(text, rng.randint(1, 20))
        assert "".join(pieces) == text
        assert [t for p in pieces for t in encoding.encode_ordinary(p)] == encoding.encode_ordinary(text), repr(text)


# -----------------------------------------------------------------------------
# prepare_data.py: the Hugging Face path, with an in-memory stream in place of `datasets`


def fake_stream(monkeypatch, documents):
    """Replace the Hugging Face stream by documents (cycled, endless); return a counter of rows read."""
    rows_read = [0]

    def load_streaming_dataset(dataset, name, split):
        for i in range(10**9):
            rows_read[0] += 1
            yield {"id": i, "text": documents[i % len(documents)]}

    monkeypatch.setattr(prepare_data, "load_streaming_dataset", load_streaming_dataset)
    return rows_read


def test_dataset_is_streamed_no_further_than_max_tokens_needs(tmp_path, monkeypatch):
    rows_read = fake_stream(monkeypatch, DOCUMENTS)
    out_dir = tmp_path / "out"
    code = run("--dataset", "Some/fake-set", "--name", "tiny", "--out_dir", out_dir,
               "--val_tokens", 250, "--shard_tokens", 1000, "--max_tokens", 5000, "--workers", 2)
    assert code == 0
    tokens, manifest = stream_of(out_dir)
    np.testing.assert_array_equal(tokens, expected_tokens(DOCUMENTS * 1000)[:5000])
    assert [s["file"] for s in manifest["shards"]][:2] == ["fake_set_val_000000.bin", "fake_set_train_000001.bin"]
    assert manifest["settings"]["source"] == {"dataset": "Some/fake-set", "name": "tiny", "split": "train", "text_field": "text"}
    assert rows_read[0] < 2000  # ~40 rows hold 5000 tokens; the rest is the bounded read-ahead of the workers


def test_fineweb_edu_sample_10bt_is_the_default_source(tmp_path, monkeypatch):
    opened = []
    fake_stream(monkeypatch, DOCUMENTS)
    load = prepare_data.load_streaming_dataset
    monkeypatch.setattr(prepare_data, "load_streaming_dataset", lambda *a: opened.append(a) or load(*a))
    assert run("--out_dir", tmp_path / "out", "--max_tokens", 2000, "--val_tokens", 100, "--workers", 1) == 0
    assert opened == [("HuggingFaceFW/fineweb-edu", "sample-10BT", "train")]
    assert os.path.exists(tmp_path / "out" / "fineweb_edu_val_000000.bin")


def test_unreachable_dataset_gets_one_clear_line(tmp_path, monkeypatch, capsys):
    def offline(dataset, name, split):
        raise ConnectionError("Couldn't reach 'HuggingFaceFW/fineweb-edu' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(prepare_data, "load_streaming_dataset", offline)
    assert run("--out_dir", tmp_path / "out", "--workers", 1) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not stream Hugging Face dataset HuggingFaceFW/fineweb-edu" in err


# -----------------------------------------------------------------------------
# prepare_data.py: crashes, reruns and bad input


@pytest.mark.parametrize("source", ["local files, default 10% val", "local files, explicit val", "dataset stream"])
def test_killed_run_rerun_gives_byte_identical_shards_and_skips_finished_ones(tmp_path, monkeypatch, source):
    documents = DOCUMENTS * 4
    if source == "dataset stream":
        fake_stream(monkeypatch, documents)
        args = ["--dataset", "fake/set", "--name", "x", "--max_tokens", 2000, "--val_tokens", 150]
    else:
        args = ["--input", write_jsonl(tmp_path / "docs.jsonl", documents)]
        args += ["--val_tokens", 150] if "explicit" in source else []
    args += ["--shard_tokens", 170, "--workers", 1]  # shards end inside documents, some inside the long one
    monkeypatch.setattr(prepare_data, "TASK_CHARS", 200)  # a small read-ahead, to see what the rerun reads
    written, tokenized = [], []
    real_write_shard, real_tokenize_task = prepare_data.write_shard, prepare_data.tokenize_task
    monkeypatch.setattr(prepare_data, "tokenize_task", lambda task: tokenized.extend(task) or real_tokenize_task(task))
    assert run(*args, "--out_dir", tmp_path / "clean") == 0

    def write_shard_then_die(path, tokens):
        if len(written) == 3:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) while the 4th shard is being written
        real_write_shard(path, tokens)
        written.append(os.path.basename(path))

    monkeypatch.setattr(prepare_data, "write_shard", write_shard_then_die)
    assert run(*args, "--out_dir", tmp_path / "rerun") == 130
    assert sorted(os.listdir(tmp_path / "rerun")) == sorted(written + ["manifest.json"])

    written.clear()
    tokenized.clear()
    monkeypatch.setattr(prepare_data, "write_shard", lambda path, tokens: written.append(path) or real_write_shard(path, tokens))
    assert run(*args, "--out_dir", tmp_path / "rerun") == 0
    assert file_bytes(tmp_path / "rerun") == file_bytes(tmp_path / "clean")
    assert len(written) == len(file_bytes(tmp_path / "clean")) - 3  # the 3 finished shards were not written again
    clean_manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    rerun_manifest = json.loads((tmp_path / "rerun" / "manifest.json").read_text())
    assert rerun_manifest["shards"] == clean_manifest["shards"]
    # nor were their whole documents tokenized again (the 10% split, once counted, is in the manifest)
    documents_done = clean_manifest["shards"][2]["resume_at"]["documents"]
    assert documents_done > 0 and tokenized[0] == (True, prepare_data.split_document(documents[documents_done], 200)[0])


def test_full_disk_leaves_no_half_written_shard_and_a_rerun_completes(tmp_path, monkeypatch, capsys):
    args = ["--input", write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS * 2), "--shard_tokens", 200, "--val_tokens", 150,
            "--workers", 1]
    assert run(*args, "--out_dir", tmp_path / "clean") == 0
    real_fsync = os.fsync

    def fsync_disk_full(fd):
        if "_train_" in os.readlink(f"/proc/self/fd/{fd}"):  # the disk fills up on the first train shard
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_disk_full)
    assert run(*args, "--out_dir", tmp_path / "full") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "docs_train_000001.bin" in err and "No space left on device" in err
    assert sorted(os.listdir(tmp_path / "full")) == ["docs_val_000000.bin", "manifest.json"]

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert run(*args, "--out_dir", tmp_path / "full") == 0
    assert file_bytes(tmp_path / "full") == file_bytes(tmp_path / "clean")


def test_damaged_finished_shard_is_written_again_on_rerun(tmp_path):
    args = ["--input", write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS * 2), "--shard_tokens", 200, "--workers", 1,
            "--out_dir", tmp_path / "out"]
    assert run(*args) == 0
    clean = file_bytes(tmp_path / "out")
    with open(tmp_path / "out" / "docs_train_000002.bin", "r+b") as f:
        f.truncate(2000)
    assert run(*args) == 0
    assert file_bytes(tmp_path / "out") == clean


def test_out_dir_holding_shards_of_another_source_is_refused(tmp_path, capsys):
    a, b = write_jsonl(tmp_path / "a.jsonl", DOCUMENTS), write_jsonl(tmp_path / "b.jsonl", DOCUMENTS[:2])
    assert run("--input", a, "--out_dir", tmp_path / "out", "--prefix", "corpus", "--workers", 1) == 0
    assert run("--input", b, "--out_dir", tmp_path / "out", "--prefix", "corpus", "--workers", 1) == 1
    assert "holds shards of another source" in capsys.readouterr().err
    (tmp_path / "llmc").mkdir()
    write_shard(str(tmp_path / "llmc" / "fineweb_val_000000.bin"), np.arange(10))
    assert run("--input", a, "--out_dir", tmp_path / "llmc", "--workers", 1) == 1
    assert "holds shards of another source (fineweb_val_000000.bin)" in capsys.readouterr().err


@pytest.mark.parametrize("case, expected", [
    ("missing file", "input file {tmp}/missing.txt does not exist"),
    ("empty file", "input file {tmp}/empty.txt is empty"),
    ("glob matching nothing", "no file matches --input {tmp}/*.parquet"),
    ("jsonl line without the text field", "{tmp}/bad.jsonl:2 has no 'text' field (it has: id, body); name the text field with --text_field"),
    ("no documents at all", "found no documents in {tmp}/blank.jsonl"),
    ("unknown file type", "input file {tmp}/notes.md is not .txt, .jsonl or .parquet"),
    ("prefix the loader would misread", "shard prefix 'my_train' must be"),
])
def test_bad_input_gets_one_clear_line(tmp_path, capsys, case, expected):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "fine"}\n{"id": 2, "body": "no text"}\n')
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    (tmp_path / "notes.md").write_text("# notes")
    inputs = {"missing file": "missing.txt", "empty file": "empty.txt", "glob matching nothing": "*.parquet",
              "jsonl line without the text field": "bad.jsonl", "no documents at all": "blank.jsonl",
              "unknown file type": "notes.md", "prefix the loader would misread": "bad.jsonl"}[case]
    extra = ["--prefix", "my_train"] if "prefix" in case else []
    assert run("--input", tmp_path / inputs, "--out_dir", tmp_path / "out", "--workers", 1, *extra) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert expected.format(tmp=tmp_path) in err


# -----------------------------------------------------------------------------
# prepare_data.py: a broken stream, too little text, the same file by another path


class ResumableStream:
    """datasets.IterableDataset's resumable iteration in miniature: a state_dict() taken after a row resumes after it."""

    def __init__(self, documents, rows_read, failures):
        self.documents, self.rows_read, self.failures = documents, rows_read, failures
        self.start = self.position = 0

    def state_dict(self):
        return {"examples_iterable": {"shard_example_idx": self.position}, "epoch": 0}

    def load_state_dict(self, state):
        self.start = state["examples_iterable"]["shard_example_idx"]

    def __iter__(self):
        self.position = self.start
        while self.position < len(self.documents):
            if self.failures.get(self.position):  # a network error before this row arrives, once per entry
                raise self.failures[self.position].pop(0)
            self.rows_read.append(self.position)
            self.position += 1
            yield {"id": self.position - 1, "text": self.documents[self.position - 1]}


def resumable_stream(monkeypatch, documents, failures=None):
    """Replace the Hugging Face stream by a ResumableStream; return the list of rows it downloads."""
    rows_read = []
    monkeypatch.setattr(prepare_data, "load_streaming_dataset",
                        lambda dataset, name, split: ResumableStream(documents, rows_read, failures or {}))
    monkeypatch.setattr(prepare_data, "STREAM_RETRY_SECONDS", 0.001)
    return rows_read


STREAM_ARGS = ["--dataset", "fake/set", "--name", "x", "--val_tokens", 150, "--shard_tokens", 170, "--max_tokens", 3000,
               "--workers", 1]


@pytest.mark.parametrize("saved_state", [True, False], ids=["stream state saved", "older manifest without it"])
def test_broken_stream_resumes_from_its_saved_state_not_from_the_first_row(tmp_path, monkeypatch, saved_state):
    documents = DOCUMENTS * 20
    rows_read = resumable_stream(monkeypatch, documents)
    monkeypatch.setattr(prepare_data, "TASK_CHARS", 200)  # a small read-ahead
    assert run(*STREAM_ARGS, "--out_dir", tmp_path / "clean") == 0
    clean_manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert all("stream_state" in shard["resume_at"] for shard in clean_manifest["shards"])

    real_write_shard, written = prepare_data.write_shard, []

    def write_shard_then_die(path, tokens):
        if len(written) == 3:
            raise KeyboardInterrupt  # the connection, the machine or the user gave up during the 4th shard
        real_write_shard(path, tokens)
        written.append(path)

    monkeypatch.setattr(prepare_data, "write_shard", write_shard_then_die)
    assert run(*STREAM_ARGS, "--out_dir", tmp_path / "rerun") == 130
    manifest_path = tmp_path / "rerun" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if not saved_state:
        for shard in manifest["shards"]:
            del shard["resume_at"]["stream_state"]
        manifest_path.write_text(json.dumps(manifest))

    monkeypatch.setattr(prepare_data, "write_shard", real_write_shard)
    rows_read.clear()
    assert run(*STREAM_ARGS, "--out_dir", tmp_path / "rerun") == 0
    assert file_bytes(tmp_path / "rerun") == file_bytes(tmp_path / "clean")
    first_needed = manifest["shards"][2]["resume_at"]["documents"]
    assert first_needed > 0
    assert rows_read[0] == (first_needed if saved_state else 0)  # without a state: read again and skipped by count


def test_network_error_mid_stream_is_retried_with_backoff_from_the_row_it_reached(tmp_path, monkeypatch, capsys):
    failures = {10: [ConnectionError("Read timed out."), TimeoutError("The read operation timed out")]}
    rows_read = resumable_stream(monkeypatch, DOCUMENTS * 20, failures)
    assert run(*STREAM_ARGS, "--out_dir", tmp_path / "out") == 0
    tokens, _ = stream_of(tmp_path / "out")
    np.testing.assert_array_equal(tokens, expected_tokens(DOCUMENTS * 20)[:3000])
    assert rows_read == list(range(len(rows_read)))  # every row downloaded once, none again after the retries
    err = capsys.readouterr().err
    assert "streaming fake/set failed at row 10 (ConnectionError: Read timed out.); retry 1 of 5 in 0.001 s" in err
    assert "(TimeoutError: The read operation timed out); retry 2 of 5 in 0.002 s" in err


@pytest.mark.parametrize("error, retries", [(ConnectionError("Read timed out."), 5),
                                            (RuntimeError("Parquet magic bytes not found"), 0)],
                         ids=["network error that persists", "not a network error"])
def test_stream_error_is_one_clear_line(tmp_path, monkeypatch, capsys, error, retries):
    resumable_stream(monkeypatch, DOCUMENTS * 20, {10: [error] * 10})
    assert run(*STREAM_ARGS, "--out_dir", tmp_path / "out") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == retries + 1 and all("retry" in line for line in lines[:-1])
    tried = f" after {retries} retries" if retries else ""
    assert lines[-1] == (f"error: streaming fake/set failed at row 10{tried} ({type(error).__name__}: {error}); "
                         f"rerun the same command to continue after the finished shards")


def test_min_batch_tokens_is_one_batch_of_the_demo_config():
    config = runpy.run_path(os.path.join(REPO, "configs", "demo_cpu.py"))
    assert prepare_data.MIN_BATCH_TOKENS == config["batch_size"] * config["block_size"] + 1


@pytest.mark.parametrize("case, argv, expected", [
    ("too little text", [], "gives {total:,} tokens ({val:,} val + {train:,} train), but train.py needs at least one batch "
                            "in each split (--min_batch_tokens 2,049, the demo's batch_size*block_size+1)"),
    ("shards smaller than a batch", ["--shard_tokens", 2000], "--shard_tokens 2,000 is smaller than one batch of train.py"),
    ("val smaller than a batch", ["--val_tokens", 1000], "--val_tokens 1,000 is smaller than one batch of train.py"),
    ("max_tokens leaves train less than a batch", ["--val_tokens", 2049, "--max_tokens", 3000],
     "--val_tokens 2,049 leaves 951 of --max_tokens 3,000 for train, fewer than one batch"),
])
def test_input_smaller_than_one_batch_is_refused_at_once(tmp_path, capsys, case, argv, expected):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS * 4)
    code = prepare_data.main(["--input", docs, "--out_dir", str(tmp_path / "out"), "--workers", "1", *map(str, argv)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    total = len(expected_tokens(DOCUMENTS * 4))
    assert expected.format(total=total, val=total // 10, train=total - total // 10) in err
    assert glob.glob(str(tmp_path / "out" / "*.bin")) == []  # nothing written: said at once


def test_input_of_one_batch_per_split_feeds_the_demo_loader(tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS * 30)
    assert prepare_data.main(["--input", docs, "--out_dir", str(tmp_path / "out"), "--workers", "1"]) == 0
    for split in ("val", "train"):  # configs/demo_cpu.py's batch: train.py would start
        x, y = ShardLoader(str(tmp_path / "out"), split, batch_size=16, block_size=128).next_batch()
        assert x.shape == y.shape == (16, 128)


def test_same_file_by_relative_and_absolute_path_is_the_same_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS)
    assert run("--input", "docs.jsonl", "--out_dir", "out", "--workers", 1) == 0
    clean = file_bytes(tmp_path / "out")
    assert run("--input", tmp_path / "docs.jsonl", "--out_dir", tmp_path / "out", "--workers", 1) == 0
    assert run("--input", "./docs.jsonl", "--out_dir", "out", "--workers", 1) == 0
    assert file_bytes(tmp_path / "out") == clean


# A prepare_data.py run slow enough to interrupt: every tokenization task sleeps first (in the workers).
SLOW_PREPARE = """
import atexit, sys, time
import prepare_data
real_tokenize_task = prepare_data.tokenize_task
def slow_tokenize_task(task):
    time.sleep(0.1)
    return real_tokenize_task(task)
prepare_data.tokenize_task = slow_tokenize_task
prepare_data.TASK_CHARS = 200
if sys.argv[1] == "slow exit":  # stands in for what may take long after a Ctrl-C: threads of a stream, a pool closing
    atexit.register(time.sleep, 60)
sys.exit(prepare_data.main(sys.argv[2:]))
"""


def start_slow_prepare(tmp_path, slow_exit=False):
    """prepare_data.py with 2 workers in a process group of its own (as a shell runs it), once its first shard is written."""
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCUMENTS * 20)
    argv = ["--input", docs, "--out_dir", str(tmp_path / "out"), "--val_tokens", "200", "--shard_tokens", "200",
            "--min_batch_tokens", "0", "--workers", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    process = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, "slow exit" if slow_exit else "-", *argv], cwd=REPO,
                               env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not glob.glob(str(tmp_path / "out" / "*.bin")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.05)
    return process, argv


def finish(process, seconds):
    """stderr of the process once it ended (failing if it takes longer than seconds), and that no worker outlived it."""
    try:
        err = process.communicate(timeout=seconds)[1]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"still running {seconds} s after the signal: {process.communicate()[1]}")
    for _ in range(100):  # the workers, in the same process group, must be gone too
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return err
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"a worker outlived prepare_data.py: {err}")


@pytest.mark.parametrize("signum, to_the_group", [(signal.SIGTERM, True), (signal.SIGTERM, False)],
                         ids=["SIGTERM to the process group (docker stop)", "kill PID"])  # Ctrl-C: the test below
def test_signal_during_prepare_is_one_clean_message_and_the_rerun_completes(tmp_path, signum, to_the_group):
    process, argv = start_slow_prepare(tmp_path)
    (os.killpg if to_the_group else os.kill)(process.pid, signum)
    err = finish(process, 60)
    assert process.returncode == 128 + signum, err
    assert err.strip() == f"interrupted ({signal.Signals(signum).name}); rerun the same command to continue after the finished shards"
    assert run(*argv) == 0  # nothing lost: the rerun finishes the job
    tokens, _ = stream_of(tmp_path / "out")
    np.testing.assert_array_equal(tokens, expected_tokens(DOCUMENTS * 20))


def test_worker_forked_before_its_initializer_ends_quietly_on_sigterm():
    """Pool forks a replacement worker at any time; until init_worker runs it holds the main process's handlers."""
    read_end, write_end = os.pipe()
    with prepare_data.interrupted_cleanly():
        pid = os.fork()
        if pid == 0:  # the new worker, its initializer not yet run
            os.dup2(write_end, 2)
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # Pool.terminate()
                time.sleep(5)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
    os.close(write_end)
    assert os.read(read_end, 10_000) == b""  # no traceback, no message: the main process speaks
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path):
    process, _ = start_slow_prepare(tmp_path, slow_exit=True)
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(1.0)  # the first Ctrl-C is being handled: the message, then the slow exit
    os.killpg(process.pid, signal.SIGINT)
    err = finish(process, 10)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "SIGINT again: stopped at once; rerun the same command to continue after the finished shards"


# -----------------------------------------------------------------------------
# data.py: the shard format


def test_hand_written_llmc_header_is_read_and_ours_is_byte_identical(tmp_path):
    tokens = [EOT_TOKEN, 15496, 995, 0, 65535]
    llmc = struct.pack("<256i", 20240520, 1, len(tokens), *[0] * 253) + struct.pack(f"<{len(tokens)}H", *tokens)
    (tmp_path / "llmc.bin").write_bytes(llmc)
    assert read_header(str(tmp_path / "llmc.bin")) == len(tokens)
    assert read_shard(str(tmp_path / "llmc.bin")).tolist() == tokens
    write_shard(str(tmp_path / "ours.bin"), np.array(tokens))
    assert (tmp_path / "ours.bin").read_bytes() == llmc
    assert (data.SHARD_MAGIC, data.SHARD_VERSION, data.HEADER_INTS) == (20240520, 1, 256)


@pytest.mark.parametrize("damage, message", [
    (lambda b: struct.pack("<i", 20240801) + b[4:], "is not a token shard: magic number 20240801 is not 20240520"),
    (lambda b: b[:4] + struct.pack("<i", 7) + b[8:], "has shard version 7, expected 1"),
    (lambda b: b[:-3], "is truncated or corrupt: its header promises 1,000 tokens (3,024 bytes) but the file has 3,021 bytes"),
    (lambda b: b[:100], "is not a token shard: 100 bytes is shorter than the 1024-byte header"),
])
def test_corrupt_shard_is_reported_by_name(tmp_path, damage, message):
    path = str(tmp_path / "x_train_000001.bin")
    write_shard(path, np.arange(1000))
    with open(path, "rb") as f:
        good = f.read()
    with open(path, "wb") as f:
        f.write(damage(good))
    for read in (read_shard, lambda p: ShardLoader(str(tmp_path), "train", 2, 4)):
        with pytest.raises(ValueError, match="x_train_000001.bin") as info:
            read(path)
        assert message in str(info.value) and "rerun prepare_data.py" in str(info.value)


def test_write_shard_refuses_tokens_that_do_not_fit_uint16(tmp_path):
    with pytest.raises(ValueError, match="must be in \\[0, 65535\\]"):
        write_shard(str(tmp_path / "x.bin"), np.array([1, 70000]))
    assert os.listdir(tmp_path) == []


# -----------------------------------------------------------------------------
# data.py: ShardLoader


@pytest.fixture
def shards(tmp_path):
    """A val shard and three train shards of a known stream (token i is i % 50000); returns (dir, train stream per shard)."""
    sizes = {"t_val_000000.bin": 300, "t_train_000001.bin": 1000, "t_train_000002.bin": 20, "t_train_000003.bin": 530}
    start, train = 0, []
    for name, size in sizes.items():
        tokens = np.arange(start, start + size) % 50000
        write_shard(str(tmp_path / name), tokens)
        start += size
        if "train" in name:
            train.append(tokens)
    return str(tmp_path), train


def test_loader_batches_follow_the_token_stream_shard_by_shard(shards):
    data_dir, train = shards
    B, T = 2, 8
    loader = ShardLoader(data_dir, "train", B, T)
    assert isinstance(loader.tokens, np.memmap)
    # full steps of 16 (+1 target token) per shard; the 20-token shard fits one; the rest of each shard is skipped
    expected_starts = [(0, p) for p in range(0, 1000 - 16, 16)] + [(1, 0)] + [(2, p) for p in range(0, 530 - 16, 16)]
    assert loader.steps_per_epoch == len(expected_starts) and loader.tokens_per_epoch == 16 * len(expected_starts)
    for epoch in range(2):
        for shard, position in expected_starts:
            x, y = loader.next_batch()
            assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (B, T)
            stream = torch.from_numpy(train[shard][position : position + B * T + 1].astype(np.int64))
            assert torch.equal(x.flatten(), stream[:-1]) and torch.equal(y.flatten(), stream[1:])
        assert loader.epoch == epoch  # wraps to the first shard only when the next batch is taken
    loader.next_batch()
    assert loader.state_dict() == {"shard": 0, "position": 16, "epoch": 2}


def test_loader_state_dict_round_trip_continues_identically(shards):
    data_dir, _ = shards
    loader = ShardLoader(data_dir, "train", 4, 16)
    for _ in range(17):
        loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))
    expected = [loader.next_batch() for _ in range(30)]
    resumed = ShardLoader(data_dir, "train", 4, 16)
    resumed.load_state_dict(state)
    for x, y in expected:
        x2, y2 = resumed.next_batch()
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_ddp_ranks_see_disjoint_batches_that_together_cover_the_stream(shards):
    data_dir, _ = shards
    B, T = 3, 8
    ranks = [ShardLoader(data_dir, "train", B, T, rank=r, world_size=2) for r in range(2)]
    whole = ShardLoader(data_dir, "train", 2 * B, T)  # one process reading both ranks' rows
    assert ranks[0].steps_per_epoch == whole.steps_per_epoch
    for _ in range(2 * whole.steps_per_epoch):
        (x0, y0), (x1, y1), (x, y) = ranks[0].next_batch(), ranks[1].next_batch(), whole.next_batch()
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
        assert not set(x0.flatten().tolist()) & set(x1.flatten().tolist())


def test_val_loader_yields_the_same_tokens_after_reset(shards):
    data_dir, _ = shards
    val = ShardLoader(data_dir, "val", 2, 32)
    first = [val.next_batch()[0] for _ in range(val.steps_per_epoch)]
    val.reset()
    assert all(torch.equal(a, val.next_batch()[0]) for a in first)
    assert first[0][0, 0].item() == 0


def test_loader_without_shards_says_to_run_prepare_data(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no \\*_train_\\*.bin shards in {tmp_path}; run prepare_data.py first"):
        ShardLoader(str(tmp_path), "train", 2, 8)


def test_shard_too_small_for_one_batch_is_a_clear_error(shards):
    data_dir, _ = shards
    with pytest.raises(ValueError, match=r"t_val_000000.bin holds 300 tokens, fewer than one step needs .*= 2\*32\*5\+1 = 321"):
        ShardLoader(data_dir, "val", 2, 32, rank=0, world_size=5)


# -----------------------------------------------------------------------------
# Real data


@pytest.mark.skipif(not os.path.exists(SHAKESPEARE), reason="needs ../shared/data/tinyshakespeare.txt beside the checkout")
def test_tiny_shakespeare_shards_round_trip_and_feed_the_loader(tmp_path):
    out_dir = tmp_path / "shakespeare"
    assert run("--input", SHAKESPEARE, "--out_dir", out_dir, "--shard_tokens", 100_000, "--workers", 2) == 0
    tokens, manifest = stream_of(out_dir)
    with open(SHAKESPEARE, encoding="utf-8") as f:
        np.testing.assert_array_equal(tokens, expected_tokens([f.read()]))
    assert manifest["tokens"]["val"] == len(tokens) // 10 == 33_802
    val = ShardLoader(str(out_dir), "val", batch_size=8, block_size=256)
    x, y = val.next_batch()
    assert torch.equal(x.flatten()[1:], y.flatten()[:-1]) and x[0, 0].item() == EOT_TOKEN
    assert ShardLoader(str(out_dir), "train", 8, 256).steps_per_epoch == sum((n - 1) // 2048 for n in [100_000] * 3 + [4_224])
