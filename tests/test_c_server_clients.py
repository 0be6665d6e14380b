"""c/gpt-server against clients that would stall a server: one that stops reading its stream, a thousand that send
half a request and wait, more connections than the server takes, one that goes away mid-stream, one without the API
key; and its memory over 5,000 mixed requests. Under AddressSanitizer/UBSan and ThreadSanitizer (tests/test_c_server.py
has the fixtures and builds), but the memory test, which runs a plain build (ASan keeps freed memory in quarantine).

Every client here talks to 127.0.0.1 only, with bounded counts and timeouts.
"""

import concurrent.futures
import json
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import time

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cheapgpt2 import engine_file
from conftest import REPO, makefile_sources
from test_c_server import (PROMPT, Server, binaries, build_jobs, enc, expected_text, greedy, open_stream,  # noqa: F401
                           planted, post, random_model, raw_exchange, read_to_end, status_of, stream_events)

pytestmark = pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="needs a C compiler (cc)")


def metrics(port, headers=None):
    status, raw = post(port, None, method="GET", path="/metrics", headers=headers)
    assert status == 200, raw
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(raw.decode()) for s in family.samples}


def wait_for(condition, seconds, what):
    deadline = time.time() + seconds
    while not (value := condition()):
        assert time.time() < deadline, what
        time.sleep(0.05)
    return value


def stopped_clean(server):
    code = server.stop()
    server.assert_clean()
    assert code == 0, server.read_log()[-4000:]


# ---------------------------------------------------------------------------------------------------
# a client that stops reading

def stalled_client(port, body):
    """A connection with a 4 KiB receive buffer that sends its request and never reads a byte."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    return s


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
    """(torch model, exported file): 512 tokens of GPT-2's vocabulary, so that a step is cheap even under the
    sanitizers and a stalled client's megabytes of logprobs come within a second."""
    import torch
    from cheapgpt2.model import GPT, GPTConfig
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=512, block_size=32, n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    path = str(tmp_path_factory.mktemp("model") / "small_vocab.bin")
    engine_file.export(model.eval(), path)
    return model.eval(), path


def test_a_stalled_reader_holds_only_its_own_slots_and_is_cut_after_the_timeout(binaries, small_vocab, enc, tmp_path):
    """A client asks for 8 streams with logprobs (megabytes) and never reads: its choices pause once its outbox is
    full, another client's 512-token stream takes what it takes alone (at most 1.5x), and after --timeout without a
    byte taken the stalled client is cut, its slots freed, and /metrics and the log say so."""
    model, path = small_vocab
    server = Server(binaries[0], path, str(tmp_path / "stall.log"), "--parallel", "16", "--timeout", "10",
                    "--max_tokens_cap", "100000")
    try:
        body = {"prompt": [40, 257, 318], "max_tokens": 512, "temperature": 0}  # ids below 512
        expected = enc.decode(greedy(model, body["prompt"], 512))

        def timed_stream():
            start = time.time()
            events = stream_events(server.port, body)
            assert "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"]) == expected
            return time.time() - start

        alone = statistics.median(timed_stream() for _ in range(3))
        stalled = stalled_client(server.port, {"prompt": [40, 257], "n": 8, "max_tokens": 100000, "logprobs": 5,
                                               "temperature": 1.0, "stream": True})
        wait_for(lambda: metrics(server.port)[("gptserver:slots_waiting_for_client", ())] == 8, 60,
                 "the stalled client's 8 choices never paused")
        beside = statistics.median(timed_stream() for _ in range(3))
        assert metrics(server.port)[("gptserver:slots_waiting_for_client", ())] == 8  # still stalled, not yet cut
        print(f"a 512-token stream: {alone * 1e3:.0f} ms alone, {beside * 1e3:.0f} ms beside a stalled reader")
        assert beside <= 1.5 * alone, (alone, beside)

        too_slow = ("gptserver:requests_total", (("outcome", "client_too_slow"),))
        now = wait_for(lambda: (m := metrics(server.port))[too_slow] == 1 and m, 30, "the stalled client was not cut")
        assert now[("gptserver:slots_busy", ())] == 0 and now[("gptserver:slots_waiting_for_client", ())] == 0
        assert [line for line in server.read_log().splitlines() if line.startswith("client too slow")] == [
            "client too slow: it took no bytes for 10 s; cut with its answer unsent"]
        assert "(client too slow: cut)" in server.read_log()
        stalled.close()
        assert post(server.port, dict(body, max_tokens=8))[1]["choices"][0]["text"] == enc.decode(
            greedy(model, body["prompt"], 8))
    finally:
        stopped_clean(server)


# ---------------------------------------------------------------------------------------------------
# many connections

@pytest.fixture
def many_files():
    """Room for a thousand sockets in this process (the soft open-file limit raised, as the server raises its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 and (hard == resource.RLIM_INFINITY or hard >= 2048):
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2048:
        pytest.skip(f"the open-file limit ({soft}, hard {hard}) leaves no room for 1,000 connections")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_normal_request_is_answered_promptly_beside_a_thousand_half_sent_ones(binaries, planted, enc, tmp_path, many_files):
    server = Server(binaries[0], planted[1], str(tmp_path / "many.log"), "--timeout", "30")
    half_sent = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
            half_sent.append(s)
        wait_for(lambda: metrics(server.port)[("gptserver:connections", ())] >= 1001, 30,  # and the /metrics request
                 "the server did not take the 1,000 connections")
        start = time.time()
        status, answer = post(server.port, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0})
        elapsed = time.time() - start
        assert status == 200 and answer["choices"][0]["text"] == expected_text(enc, planted[2], 8)[0]
        print(f"a request beside 1,000 half-sent ones: {elapsed * 1e3:.0f} ms")
        assert elapsed < 1.0
        assert int(re.search(r"max connections (\d+)", server.read_log())[1]) > 1000
    finally:
        for s in half_sent:
            s.close()
        stopped_clean(server)


def test_past_max_connections_a_client_is_answered_503_at_once(binaries, planted, tmp_path):
    server = Server(binaries[0], planted[1], str(tmp_path / "full.log"), "--max_connections", "20", "--timeout", "30")
    held = []
    try:
        assert "max connections 20 (open-file limit" in server.read_log()
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"GET /health HTTP/1.1\r\n")
            held.append(s)
        time.sleep(0.5)  # all 20 accepted
        start = time.time()
        answer = raw_exchange(server.port, b"GET /health HTTP/1.1\r\n\r\n", timeout=5)
        assert status_of(answer) == 503 and b'"code":"server_busy"' in answer, answer
        assert time.time() - start < 1.0
        json.loads(answer.split(b"\r\n\r\n", 1)[1])  # its Content-Length is the body's
        for s in held[:5]:
            s.close()
        # until the server has seen the 5 close, a try is refused: a 503, or the connection cut while the request goes out
        wait_for(lambda: status_of(raw_exchange(server.port, b"GET /health HTTP/1.1\r\n\r\n", timeout=5)) == 200, 10,
                 "no room after closing 5")
    finally:
        for s in held:
            s.close()
        stopped_clean(server)


def test_a_client_gone_mid_stream_frees_its_slot_at_the_next_step(binaries, planted, enc, tmp_path):
    server = Server(binaries[0], planted[1], str(tmp_path / "gone.log"), "--parallel", "1", "--queue", "0",
                    "--max_tokens_cap", "100000")
    try:
        s = open_stream(server.port)  # 100,000 tokens: minutes of work if nobody stopped it
        wait_for(lambda: metrics(server.port)[("gptserver:slots_busy", ())] == 1, 10, "the stream did not start")
        s.close()
        start = time.time()
        wait_for(lambda: metrics(server.port)[("gptserver:slots_busy", ())] == 0, 5, "the slot was not freed")
        freed = time.time() - start
        print(f"slot freed {freed * 1e3:.0f} ms after the client closed")
        assert freed < 1.0
        status, answer = post(server.port, {"prompt": PROMPT, "max_tokens": 6, "temperature": 0})  # the one slot, free
        assert status == 200 and answer["choices"][0]["text"] == expected_text(enc, planted[2], 6)[0]
        assert "(client went away)" in server.read_log()
    finally:
        stopped_clean(server)


# ---------------------------------------------------------------------------------------------------
# the API key

def test_the_api_key_guards_every_endpoint_but_health_and_the_page(binaries, planted, enc, tmp_path):
    server = Server(binaries[0], planted[1], str(tmp_path / "key.log"), "--api-key", "s3cret-key")
    try:
        assert "API key needed" in server.read_log()
        body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0}
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cret-ke"},
                        {"Authorization": "s3cret-key"}, {"Authorization": "Bearer s3cret-key2"}):
            status, answer = post(server.port, body, headers=headers)
            assert status == 401, (headers, answer)
            assert answer["error"]["code"] == "invalid_api_key" and answer["error"]["type"] == "invalid_request_error"
        right = {"Authorization": "Bearer s3cret-key"}
        status, answer = post(server.port, body, headers=right)
        assert status == 200 and answer["choices"][0]["text"] == expected_text(enc, planted[2], 4)[0]
        assert post(server.port, None, method="GET", path="/health") == (200, {"status": "ok"})
        assert post(server.port, None, method="GET", path="/")[0] in (200, 404)  # the page: it asks for the key itself
        for method, path, data in (("GET", "/metrics", None), ("GET", "/v1/models", None), ("POST", "/tokenize", {"content": "a"}),
                                   ("POST", "/detokenize", {"tokens": [1]}), ("GET", "/v1/models/planted", None)):
            assert post(server.port, data, method=method, path=path)[0] == 401, path
            assert post(server.port, data, method=method, path=path, headers=right)[0] == 200, path
        assert metrics(server.port, right)[("gptserver:requests_total", (("outcome", "unauthorized"),))] == 10
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="s3cret-key", max_retries=0)
        assert client.completions.create(model="planted", **body).choices[0].text == expected_text(enc, planted[2], 4)[0]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="nope", max_retries=0).completions.create(
                model="planted", **body)
    finally:
        stopped_clean(server)


def test_the_api_key_from_the_environment(binaries, planted, tmp_path):
    server = Server(binaries[0], planted[1], str(tmp_path / "env.log"), env={"GPT_SERVER_API_KEY": "from-env"})
    try:
        body = {"prompt": PROMPT, "max_tokens": 2}
        assert post(server.port, body)[0] == 401
        assert post(server.port, body, headers={"Authorization": "Bearer from-env"})[0] == 200
    finally:
        stopped_clean(server)


@pytest.mark.parametrize("key", [[], ["--api-key", "k"]])
def test_a_non_loopback_address_without_a_key_gets_one_warning(binaries, planted, key):
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is no address of this machine: the server warns, fails to bind, exits; no
    # socket is opened and nothing is sent anywhere
    result = subprocess.run([binaries[0], planted[1], "--host", "192.0.2.1", "--port", "0", *key], capture_output=True,
                            text=True, timeout=60)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert result.returncode == 1 and "error: cannot listen on 192.0.2.1" in result.stderr, result.stderr
    assert len(warnings) == (0 if key else 1), result.stderr


# ---------------------------------------------------------------------------------------------------
# memory over many requests

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_memory_stays_flat_over_5000_mixed_requests(tmp_path):
    """A plain build (-O2, no sanitizer): RSS after 5,000 requests of every kind, cut clients included, is within 10%
    of RSS after the first 500."""
    import torch
    from cheapgpt2.model import GPT, GPTConfig
    torch.manual_seed(0)
    path = str(tmp_path / "model.bin")
    engine_file.export(GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=64)).eval(), path)
    binary = str(tmp_path / "gpt-server")
    build = subprocess.run(["cc", "-std=c11", "-O2", "-o", binary, *makefile_sources("SERVER_SOURCES"), "-lm", "-lpthread"],
                           cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    server = Server(binary, path, str(tmp_path / "rss.log"), "--timeout", "2", "--parallel", "8")
    rng = random.Random(0)

    def one(i):
        kind = i % 8
        if kind == 0:
            return post(server.port, {"prompt": "Hello", "max_tokens": 4, "temperature": 0})[0]
        if kind == 1:
            return len(stream_events(server.port, {"prompt": "a b c", "max_tokens": 3, "n": 2, "logprobs": 2}))
        if kind == 2:
            return post(server.port, {"prompt": [1, 2, 3], "max_tokens": 0, "echo": True, "logprobs": 3})[0]
        if kind == 3:
            return post(server.port, {"prompt": "x", "max_tokens": -1})[0]  # 400
        if kind == 4:
            return post(server.port, {"content": "some text " * rng.randrange(1, 50)}, path="/tokenize")[0]
        if kind == 5:
            return post(server.port, None, method="GET", path="/metrics")[0]
        if kind == 6:  # a client that goes away mid-stream
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            data = json.dumps({"prompt": "Hi", "max_tokens": 500, "stream": True}).encode()
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            s.recv(100)
            s.close()
            return 0
        return status_of(raw_exchange(server.port, os.urandom(rng.randrange(1, 300))))  # garbage

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(500)))
            first = rss_kib(server.proc.pid)
            list(pool.map(one, range(500, 5000)))
            last = rss_kib(server.proc.pid)
        print(f"RSS after 500 requests {first} KiB, after 5,000 {last} KiB")
        assert last <= 1.10 * first, (first, last)
    finally:
        code = server.stop()
    assert code == 0, server.read_log()[-3000:]
