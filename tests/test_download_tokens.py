"""download_tokens.py against a stand-in for the Hugging Face hub on 127.0.0.1 (HF_ENDPOINT), never the internet:
the shards arrive checked, a cut download resumes, a damaged file is one line, a finished one is not fetched again."""

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

import download_tokens
from cheapgpt2.data import ShardLoader, write_shard
from test_train import REPO

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub(http.server.ThreadingHTTPServer):
    """Serves files as the hub's resolve endpoint does: HEAD with the commit, ETag and size, GET with Range."""

    def __init__(self, files):
        self.files, self.requests = files, []
        self.cuts = []  # the next GETs break after these many bytes each
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _file(self):
        match = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/[^/]+/(.+)", self.path)
        return self.server.files.get(match.group(2)) if match and match.group(1) == "kjj0/finewebedu10B-gpt2" else None

    def _head(self, data, status=200, start=0):
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()

    def do_HEAD(self):
        data = self._file()
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        self._head(data)

    def do_GET(self):
        data = self._file()
        self.server.requests.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        start = int(re.match(r"bytes=(\d+)-", self.headers["Range"]).group(1)) if self.headers.get("Range") else 0
        self._head(data, 206 if start else 200, start)
        body = data[start:]
        if self.server.cuts:
            body = body[:self.server.cuts.pop(0)]  # the connection breaks mid-file
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


def shard_bytes(tmp_path, name, tokens):
    path = tmp_path / name
    write_shard(str(path), np.array(tokens, dtype=np.uint16))
    return path.read_bytes()


@pytest.fixture
def hub(tmp_path):
    rng = np.random.default_rng(0)
    files = {f"finewebedu_val_000000.bin": shard_bytes(tmp_path, "v.bin", rng.integers(0, 50257, 3000)),
             **{f"finewebedu_train_{i:06d}.bin": shard_bytes(tmp_path, f"t{i}.bin", rng.integers(0, 50257, 5000 + i))
                for i in (1, 2)}}
    server = Hub(files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def run(hub, out_dir, *args):
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}", "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(out_dir) + "_hf_home"}
    return subprocess.run([sys.executable, "download_tokens.py", "--out_dir", str(out_dir), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_shards_arrive_checked_with_a_manifest_and_train_reads_them(hub, tmp_path):
    out = tmp_path / "fineweb_edu"
    result = run(hub, out, "--train_shards", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    for name, data in hub.files.items():
        assert (out / name).read_bytes() == data
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokens"] == {"val": 3000, "train": 5001 + 5002} and manifest["complete"]
    assert ShardLoader(str(out), "train", 4, 64, vocab_size=50304).next_batch()[0].shape == (4, 64)
    fetched = len(hub.requests)
    assert run(hub, out, "--train_shards", "2").returncode == 0
    assert len(hub.requests) == fetched  # a finished shard is not fetched again


def test_a_cut_download_resumes_where_it_stopped(hub, tmp_path):
    # a 12 MB val shard, cut after 3 MB (download_tokens.py writes each MiB it reads)
    name, chunk = "finewebedu_val_000000.bin", 3 * 1024 * 1024
    hub.files[name] = shard_bytes(tmp_path, "big.bin", np.random.default_rng(1).integers(0, 50257, 6_000_000))
    out = tmp_path / "fineweb_edu"
    # once: the same run asks for the rest at once
    hub.cuts = [chunk + 1000]
    assert run(hub, out, "--train_shards", "1").returncode == 0
    assert [r for _, r in hub.requests[:2]] == [None, f"bytes={chunk + 1000}-"]  # every byte that arrived is kept
    assert (out / name).read_bytes() == hub.files[name]
    # a chunk, and then nothing more: the run gives up with one line, and the next continues from what it kept
    out, hub.requests = tmp_path / "again", []
    hub.cuts = [chunk + 1000] + [100] * 20  # (100 bytes: less than one read, no progress)
    first = run(hub, out, "--train_shards", "1")
    assert first.returncode == 1, first.stderr[-2000:]
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not download {name}") and "run the same command again to resume" in last
    kept = (out / (name + ".partial")).stat().st_size
    assert not (out / "manifest.json").exists() and kept > chunk
    hub.cuts, hub.requests = [], []
    second = run(hub, out, "--train_shards", "1")
    assert second.returncode == 0, second.stderr[-2000:]
    assert hub.requests[0][1] == f"bytes={kept}-"  # only the rest of the shard
    for shard in (name, "finewebedu_train_000001.bin"):
        assert (out / shard).read_bytes() == hub.files[shard]


def test_a_damaged_shard_on_the_hub_is_one_line(hub, tmp_path):
    hub.files["finewebedu_train_000001.bin"] = hub.files["finewebedu_train_000001.bin"][:-10]  # truncated
    result = run(hub, tmp_path / "out", "--train_shards", "1")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "its header promises" in last


def test_a_folder_holding_another_data_sets_shards_is_one_line_and_left_alone(hub, tmp_path):
    out = tmp_path / "fineweb_edu"
    out.mkdir()
    (out / "fineweb_edu_train_000001.bin").write_bytes(b"prepare_data.py's")  # make data_fineweb's, same folder
    result = run(hub, out, "--train_shards", "1")
    assert result.returncode == 1 and hub.requests == []
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {out} holds shards of another data set (fineweb_edu_train_000001.bin), which training would read "
        f"too; choose another --out_dir, or delete them")
    assert sorted(os.listdir(out)) == ["fineweb_edu_train_000001.bin"]


def test_too_many_shards_is_one_line(capsys):
    assert download_tokens.main(["--train_shards", "100"]) == 1
    assert "1 to 99" in capsys.readouterr().err
