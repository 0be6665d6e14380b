"""c/gpt-server, built with -fsanitize=address,undefined, against real clients and references.

The model is small and built on purpose: random weights plus a planted cycle (each token of CYCLE makes the
next one the greedy choice), so that its greedy text is known in advance and has what the server must get
right: characters split across tokens (é in 2, 日 in 3, 😀 in 4), text a stop string can span. The
references are model.generate, c/gpt and tiktoken; the client is the `openai` package.
"""

import concurrent.futures
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from conftest import makefile_sources  # noqa: E402
from cheapgpt2 import engine_file
from cheapgpt2.generate import generate
from cheapgpt2.model import GPT, GPTConfig  # noqa: E402
from cheapgpt2.tokenizer import get_encoding  # noqa: E402

CYCLE = [" The", " caf", b"\xc3", b"\xa9", " is", " open", ".", b"\xe6", b"\x97", b"\xa5",
         b"\xf0", b"\x9f", b"\x98", b"\x80", " Stop", " here", "!", "\n"]
PROMPT = "Say: The"  # tiktoken: "Say", ":", " The", the last one in CYCLE
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
                 "TSAN_OPTIONS": "second_deadlock_stack=1", "OMP_NUM_THREADS": "1"}
SANITIZER_ERRORS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer")
SERVER_SOURCES = makefile_sources("SERVER_SOURCES")
ENGINE_SOURCES = ("gpt.c", "matmul.c", "bpe.c")

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")


# ---------------------------------------------------------------------------------------------------
# fixtures: the binaries, the model, the servers

@pytest.fixture(scope="module", params=["asan", "tsan"])
def build_jobs(request, tmp_path_factory):
    """Starts the two compiles (the server under a sanitizer, c/gpt plain) while the model is exported. The server's
    tests run twice: under AddressSanitizer and UndefinedBehaviorSanitizer, and under ThreadSanitizer, which checks
    what the I/O and generation threads share (the outboxes, the queue, the counters). For ThreadSanitizer the
    engine (gpt.c, matmul.c, bpe.c: the generation thread's alone) is compiled without it, which keeps the steps fast."""
    out = tmp_path_factory.mktemp("bin")
    server, gpt = str(out / "gpt-server"), str(out / "gpt")
    sources = [os.path.join(REPO, s) for s in SERVER_SOURCES]
    warn = ["-std=c11", "-g", "-Wall", "-Wextra"]
    if request.param == "asan":
        build = ["cc", "-O2", *warn, "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-o", server, *sources,
                 "-lm", "-lpthread"]
    else:
        engine = [s for s in sources if os.path.basename(s) in ENGINE_SOURCES]
        objects = [str(out / os.path.basename(s).replace(".c", ".o")) for s in engine]
        build = ["sh", "-c", " && ".join(
            [f"cc -O2 -std=c11 -c {s} -o {o}" for s, o in zip(engine, objects)] +
            [" ".join(["cc", "-O1", *warn, "-fsanitize=thread", "-o", server,
                       *[s for s in sources if s not in engine], *objects, "-lm", "-lpthread"])])]
    commands = [build, ["cc", "-std=c11", "-O2", "-o", gpt] + [os.path.join(REPO, s) for s in makefile_sources("C_SOURCES")] + ["-lm"]]
    jobs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    yield jobs, (server, gpt)
    for job in jobs:
        if job.poll() is None:
            job.kill()


@pytest.fixture(scope="module")
def binaries(build_jobs):
    jobs, paths = build_jobs
    for job in jobs:
        _, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr
        ours = [line for line in stderr.splitlines()
                if any(os.path.basename(f) in line for f in SERVER_SOURCES if os.path.basename(f) not in ENGINE_SOURCES)]
        assert not ours, "the server's sources must be -Wall -Wextra clean:\n" + "\n".join(ours)
    return paths


@pytest.fixture(scope="module")
def enc():
    return get_encoding()


@pytest.fixture(scope="module")
def planted(tmp_path_factory, enc, build_jobs):
    """(torch model, exported file, cycle token ids)."""
    ids = [enc.encode_single_token(p) for p in CYCLE]
    config = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=64, tie_embeddings=False)
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.02)
            if "ln" in name and name.endswith("weight"):
                p.add_(1.0)
        wte, head = model.transformer.wte.weight, model.lm_head.weight
        for i, token in enumerate(ids):  # token i points along axis i; the head reads axis i as "next is i+1"
            wte[token, i] += 4.0
            head[ids[(i + 1) % len(ids)], i] += 4.0
    model.eval()
    path = str(tmp_path_factory.mktemp("model") / "planted.bin")
    engine_file.export(model, path, enc=enc)
    return model, path, ids


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, enc, build_jobs):
    """(torch model, exported file): random weights large enough that every token of context matters."""
    torch.manual_seed(1)
    model = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=64))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.3)
            if "ln" in name and name.endswith("weight"):
                p.add_(1.0)
        model.transformer.wte.weight[enc.n_vocab:] = 0  # padding rows: never the argmax, as the C sampler never picks them
    model.eval()
    path = str(tmp_path_factory.mktemp("model") / "random.bin")
    engine_file.export(model, path, enc=enc)
    return model, path


def greedy(model, ids, n):
    """model.generate's greedy continuation of ids, n tokens."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only wait for each other
    try:
        return generate(model, torch.tensor([ids]), n, temperature=0)[0, len(ids):].tolist()
    finally:
        torch.set_num_threads(threads)


class Server:
    def __init__(self, binary, model_path, log_path, *args, env=None):
        self.log_path = log_path
        self.log = open(log_path, "w")
        env = dict(os.environ, **SANITIZER_ENV, **(env or {}))
        self.proc = subprocess.Popen([binary, model_path, "--port", "0", "--threads", "1", "--alias", "planted", *args],
                                     stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 30
        self.port = None
        while self.port is None:
            assert time.time() < deadline, "the server did not start:\n" + self.read_log()
            assert self.proc.poll() is None, "the server exited at start:\n" + self.read_log()
            for line in self.read_log().splitlines():
                if "listening on http://127.0.0.1:" in line:
                    self.port = int(line.rsplit(":", 1)[1])
            time.sleep(0.05)

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self.log.close()
        return code

    def assert_clean(self):
        log = self.read_log()
        assert not any(e in log for e in SANITIZER_ERRORS), log[-4000:]


@pytest.fixture(scope="module")
def server(planted, binaries, tmp_path_factory):
    s = Server(binaries[0], planted[1], str(tmp_path_factory.mktemp("log") / "server.log"),
               "--max_tokens_cap", "100000", "--timeout", "2")
    yield s
    code = s.stop()
    s.assert_clean()
    assert code == 0, s.read_log()[-4000:]


@pytest.fixture(scope="module")
def random_server(random_model, binaries, tmp_path_factory):
    s = Server(binaries[0], random_model[1], str(tmp_path_factory.mktemp("log") / "random.log"), "--timeout", "2")
    yield s
    code = s.stop()
    s.assert_clean()
    assert code == 0, s.read_log()[-4000:]


# ---------------------------------------------------------------------------------------------------
# helpers

def expected_text(enc, ids, n, stop=()):
    """The planted model's greedy continuation of PROMPT: n tokens of the cycle after " The", cut at a stop string."""
    tokens = [ids[(1 + i) % len(ids)] for i in range(n)]
    text = enc.decode(tokens)  # errors="replace", as the server
    cut = [text.index(s) for s in stop if s in text]
    return (text[:min(cut)], "stop") if cut else (text, "length")


def post(port, body, timeout=30, path="/v1/completions", method="POST", headers=None):
    """(status, parsed JSON or raw bytes) for one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw


def stream_events(port, body, timeout=30):
    """The parsed data: events of a streamed completion (the last one is "[DONE]")."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)).encode())
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    events = [line[len(b"data: "):] for line in response.read().split(b"\n\n") if line]
    conn.close()
    return [e.decode() if e == b"[DONE]" else json.loads(e) for e in events]


def read_to_end(s, seconds=10, limit=1 << 22):
    """Every byte until the peer closes: at most limit bytes, at most seconds."""
    deadline, chunks, size = time.time() + seconds, [], 0
    try:
        while time.time() < deadline and size < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def raw_exchange(port, data, timeout=10, half_close=True):
    """Sends bytes on a fresh connection and returns every byte of the answer ("" when closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before taking everything: read what it said
        return read_to_end(s, timeout)


def status_of(answer):
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def open_stream(port, max_tokens=100000):
    """A socket on which a long streamed completion has begun: its first event has arrived."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = json.dumps({"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    seen = b""
    while b"data: {" not in seen and len(seen) < 65536:
        chunk = s.recv(4096)
        assert chunk, seen
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen
    return s


# ---------------------------------------------------------------------------------------------------
# a real client; the references

def test_openai_client_greedy_text_equals_model_generate_and_c_gpt(server, planted, binaries, enc):
    openai = pytest.importorskip("openai")
    model, path, ids = planted
    n = 40  # past block_size (32 with the prompt): the window slides as model.generate's does
    prompt_ids = enc.encode(PROMPT)
    reference = greedy(model, prompt_ids, n)
    assert enc.eot_token not in reference
    c_gpt = subprocess.run([binaries[1], path, "-p", PROMPT, "-n", str(n), "-t", "0", "--print_ids"], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert c_gpt.returncode == 0, c_gpt.stderr
    assert [int(t) for t in c_gpt.stdout.split()] == reference
    assert reference == [ids[(1 + i) % len(ids)] for i in range(n)]  # the planted cycle, as designed

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == ["planted"]
    completion = client.completions.create(model="planted", prompt=PROMPT, max_tokens=n, temperature=0)
    assert completion.object == "text_completion" and completion.model == "planted"
    assert completion.choices[0].text == enc.decode(reference)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == len(enc.encode(PROMPT)) == 3
    assert completion.usage.completion_tokens == n
    assert completion.usage.total_tokens == n + 3

    pieces, finish = [], []
    for chunk in client.completions.create(model="planted", prompt=PROMPT, max_tokens=n, temperature=0, stream=True):
        pieces.append(chunk.choices[0].text)
        finish.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == enc.decode(reference)
    assert finish[-1] == "length" and set(finish[:-1]) == {None}
    assert len(pieces) > n // 2  # streamed as generated, not in one piece
    assert not any("\ufffd" in p for p in pieces)  # é, 日, 😀 arrive whole, never split between events


def test_greedy_text_of_a_random_model_equals_model_generate_and_c_gpt(random_server, random_model, binaries, enc):
    model, path = random_model
    prompt, n = "The for statement", 40  # past block_size
    reference = greedy(model, enc.encode(prompt), n)
    assert enc.eot_token not in reference
    c_gpt = subprocess.run([binaries[1], path, "-p", prompt, "-n", str(n), "-t", "0", "--print_ids"], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert [int(t) for t in c_gpt.stdout.split()] == reference
    status, answer = post(random_server.port, {"prompt": prompt, "max_tokens": n, "temperature": 0})
    assert answer["choices"][0]["text"] == enc.decode(reference)
    cached = answer["usage"].pop("prompt_tokens_details")["cached_tokens"]  # what earlier requests left in the slots
    assert answer["usage"] == {"prompt_tokens": len(enc.encode(prompt)), "completion_tokens": n,
                               "total_tokens": n + len(enc.encode(prompt))}
    assert 0 <= cached < len(enc.encode(prompt))


def test_sampling_is_reproducible_with_a_seed(server):
    # "Hello world" ends off the planted cycle: its next token is a draw (then the cycle takes over)
    body = {"prompt": "Hello world", "max_tokens": 4, "temperature": 2.0, "top_k": 1000, "top_p": 0.99}
    texts = [post(server.port, dict(body, seed=seed))[1]["choices"][0]["text"] for seed in (1, 1, 2, 3, 4, 5, 6)]
    assert texts[0] == texts[1]
    assert len(set(texts)) > 1


def test_openai_client_sees_errors_in_openai_shape(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="planted", prompt=PROMPT, max_tokens=4, temperature=-0.5)
    assert e.value.status_code == 400
    assert "temperature" in e.value.body["message"] and e.value.body["param"] == "temperature"


@pytest.mark.parametrize("stop, n", [([" Stop"], 20), (["é is"], 20), (["zzz", "here!"], 20), (["xyz"], 12),
                                     ([" Stop here!"], 15), (["日😀"], 20)])
def test_stop_strings_end_before_the_stop_and_leave_it_out(server, planted, enc, stop, n):
    # " Stop here!" with 15 tokens: the text ends inside the stop string, which must then be released
    want, reason = expected_text(enc, planted[2], n, stop)
    status, answer = post(server.port, {"prompt": PROMPT, "max_tokens": n, "temperature": 0, "stop": stop})
    assert status == 200, answer
    assert (answer["choices"][0]["text"], answer["choices"][0]["finish_reason"]) == (want, reason)
    events = stream_events(server.port, {"prompt": PROMPT, "max_tokens": n, "temperature": 0, "stop": stop})
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == want
    assert events[-2]["choices"][0]["finish_reason"] == reason
    assert not any(s in e["choices"][0]["text"] for e in events[:-1] for s in stop)


def test_max_tokens_and_finish_reason(server, planted, enc):
    ids = planted[2]
    for n in (0, 1, 2, 17):  # 2 ends inside "é": one U+FFFD, as tiktoken's decode
        status, answer = post(server.port, {"prompt": [PROMPT], "max_tokens": n, "temperature": 0})
        assert status == 200
        assert answer["choices"][0]["text"] == expected_text(enc, ids, n)[0]
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == n
        events = stream_events(server.port, {"prompt": PROMPT, "max_tokens": n, "temperature": 0,
                                             "stream_options": {"include_usage": True}})
        assert "".join(e["choices"][0]["text"] for e in events[:-2] if e["choices"]) == expected_text(enc, ids, n)[0]
        assert events[-2]["usage"]["completion_tokens"] == n  # include_usage: a last event with usage only
    assert expected_text(enc, ids, 2)[0].endswith("\ufffd")
    status, answer = post(server.port, {"prompt": PROMPT})  # OpenAI's default max_tokens, 16
    assert answer["usage"]["completion_tokens"] == 16
    status, answer = post(server.port, {"prompt": PROMPT, "max_tokens": 100001})
    assert status == 400 and "max_tokens" in answer["error"]["message"]


def test_models_health_and_http_errors(server):
    assert post(server.port, None, method="GET", path="/health") == (200, {"status": "ok"})
    status, models = post(server.port, None, method="GET", path="/v1/models")
    assert status == 200 and models["data"][0]["id"] == "planted"
    for method, path, want in [("GET", "/nope", 404), ("GET", "/v1/completions", 405), ("POST", "/health", 405),
                               ("DELETE", "/v1/models", 405)]:
        status, answer = post(server.port, b"{}" if method == "POST" else None, method=method, path=path)
        assert status == want, (method, path, answer)
        assert set(answer["error"]) >= {"message", "type", "code"}
    status, answer = post(server.port, b"{" * 10 + b"x" * (2 << 20))  # body over the limit: 413
    assert status == 413 and answer["error"]["code"] == "request_too_large"


# ---------------------------------------------------------------------------------------------------
# under load and bad input

def test_concurrent_clients_all_get_their_own_right_answer(random_server, random_model, enc):
    # the random model: every token of a request's context changes its text, so a request that saw
    # another's tokens (a shared or stale KV cache, a mixed-up queue) gets a different answer
    prompts = ["The for statement", "Hello world", "x", "import os\nimport sys"]
    references = {p: greedy(random_model[0], enc.encode(p), 13) for p in prompts}
    clients, per_client = 16, 4
    results, errors = [], []

    def client(c):
        try:
            for r in range(per_client):
                i = c * per_client + r
                prompt, n = prompts[i % len(prompts)], 3 + i % 11
                body = {"prompt": prompt, "max_tokens": n, "temperature": 0}
                if i % 2:
                    events = stream_events(random_server.port, body)
                    text = "".join(e["choices"][0]["text"] for e in events[:-1])
                else:
                    status, answer = post(random_server.port, body)
                    assert status == 200, answer
                    text = answer["choices"][0]["text"]
                results.append(text == enc.decode(references[prompt][:n]))
        except Exception as e:  # noqa: BLE001 - reported below with the others
            errors.append(repr(e))

    start = time.time()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.time() - start
    print(f"load: {clients} clients x {per_client} requests in {elapsed:.1f} s, errors: {len(errors)}")
    assert not errors, errors[:3]
    assert len(results) == clients * per_client and all(results)
    assert elapsed < 60


def malformed_requests(rng):
    """At least 500 requests a careless or hostile client might send, each with the statuses it may get and
    whether the client then closes its sending side (complete requests do not: a client that closes it has
    gone away, for the server, and gets no completion)."""
    good = json.dumps({"prompt": PROMPT, "max_tokens": 2, "temperature": 0}).encode()
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    whole = head % len(good) + good
    out = []
    for _ in range(200):  # random bytes
        out.append((bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))), {400, 404, 405, 411, 413, 414, 431, None}, True))
    for _ in range(120):  # a good request cut short, then the client stops sending
        out.append((whole[:rng.randrange(1, len(whole))], {400, None}, True))
    for _ in range(120):  # the body mutated: bad JSON mostly, sometimes still a valid request
        body = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(body))
            choice = rng.randrange(3)
            if choice == 0:
                body[i] = rng.randrange(256)
            elif choice == 1:
                del body[i]
            else:
                body.insert(i, rng.choice(b'{}[]",:\\\x00\xff\xc3'))
        out.append((head % len(body) + bytes(body), {200, 400}, False))
    bad_values = {"prompt": [None, 1, True, [], [[]], ["a", 1], [1, [2]], [-1], [50257], ["a"] * 65, {"a": 1}],
                  "max_tokens": [-1, 1.5, "8", True, 10**9, 1e300, [], None],
                  "temperature": [-0.1, -1e9, 2.5, "0", False, {}],
                  "top_p": [-0.5, 1.5, "1", []], "top_k": [-1, 0.5, "5"], "seed": [1.5, "7", 1e30],
                  "stop": [1, [1], [""], ["a"] * 5, ["x" * 300], {"a": 1}, ""],
                  "stream": [1, "yes", []], "n": [0, 65, 1.5], "best_of": [2], "echo": [1, "yes"], "logprobs": [6, -1, True],
                  "model": [5, []],
                  "stream_options": [1, {"include_usage": 3}]}
    for key, values in bad_values.items():
        for v in values:
            body = {"prompt": PROMPT, "max_tokens": 2, key: v}
            if key == "max_tokens" and v is None:
                continue  # valid: the default
            data = json.dumps(body).encode()
            out.append((head % len(data) + data, {400}, False))
    long_prompt = json.dumps({"prompt": "x " * 40}).encode()  # 40 tokens > block_size 32
    out.append((head % len(long_prompt) + long_prompt, {400}, False))
    for data in [b'{"prompt": "a\x00b"}', b'{"prompt": "a\\u0000b"}', b'{"prompt": "\xff\xfe"}', b'{"prompt": "\\ud800"}',
                 b'{"prompt": "\xc3"}', b'{"prompt": "a"', b'[1, 2]', b'"text"', b'', b'{"prompt": "a"} x', b'{' * 100 + b'}' * 100,
                 b'[' * 5000 + b']' * 5000, b'{"prompt": 1e999999}', b'{"prompt": "a", }', b"{'prompt': 'a'}"]:
        out.append((head % len(data) + data, {400}, False))
    for _ in range(40):  # oversized and odd headers
        kind = rng.randrange(5)
        if kind == 0:
            out.append((b"GET /health HTTP/1.1\r\nX: " + b"a" * rng.randrange(8200, 20000) + b"\r\n\r\n", {431}, False))
        elif kind == 1:
            out.append((b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % rng.randrange((1 << 20) + 1, 1 << 40), {413}, False))
        elif kind == 2:
            out.append((b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n", {400}, False))
        elif kind == 3:
            out.append((b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", {411}, False))
        else:
            out.append((b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", {414}, False))
    return out


def test_fuzz_then_still_serving(server, planted, enc):
    rng = random.Random(1234)
    cases = malformed_requests(rng)
    assert len(cases) >= 500
    start = time.time()
    for data, allowed, half_close in cases:
        answer = raw_exchange(server.port, data, half_close=half_close)
        assert status_of(answer) in allowed, (data[:200], answer[:300])
        if status_of(answer) and status_of(answer) >= 400:
            assert b'"error":{"message":' in answer
    print(f"fuzz: {len(cases)} malformed requests in {time.time() - start:.1f} s")
    assert server.proc.poll() is None
    assert post(server.port, None, method="GET", path="/health") == (200, {"status": "ok"})
    status, answer = post(server.port, {"prompt": PROMPT, "max_tokens": 20, "temperature": 0})
    assert answer["choices"][0]["text"] == expected_text(enc, planted[2], 20)[0]
    server.assert_clean()


def test_slow_clients_do_not_block_others_and_time_out(server, planted, enc):
    slow = []
    for _ in range(8):  # slowloris: headers that never end
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    start = time.time()
    status, answer = post(server.port, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0})
    assert status == 200 and answer["choices"][0]["text"] == expected_text(enc, planted[2], 8)[0]
    assert time.time() - start < 1.5  # well before the slow ones' 2 s timeout
    for s in slow:  # the server gives up on them after --timeout 2
        s.sendall(b"X-Slow: 1\r\n")
        assert status_of(s.recv(4096)) == 408
        s.close()


def test_client_gone_mid_stream_frees_the_generation(server, planted, enc):
    s = open_stream(server.port)  # 100000 tokens: minutes of work if nobody stopped it
    s.close()
    start = time.time()
    status, answer = post(server.port, {"prompt": PROMPT, "max_tokens": 6, "temperature": 0}, timeout=15)
    assert status == 200 and answer["choices"][0]["text"] == expected_text(enc, planted[2], 6)[0]
    assert time.time() - start < 10
    deadline = time.time() + 5
    while "(client went away)" not in server.read_log():
        assert time.time() < deadline
        time.sleep(0.05)
    # the same without streaming: the server notices the closed connection between tokens
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    body = json.dumps({"prompt": PROMPT, "max_tokens": 100000, "temperature": 0}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.3)
    s.close()
    status, answer = post(server.port, {"prompt": PROMPT, "max_tokens": 6, "temperature": 0}, timeout=15)
    assert status == 200 and answer["choices"][0]["text"] == expected_text(enc, planted[2], 6)[0]


def test_full_queue_answers_503_and_frees_with_the_client(binaries, planted, tmp_path):
    # one slot, no queue: the one stream holds everything (test_parallel_... fills several slots)
    busy = Server(binaries[0], planted[1], str(tmp_path / "busy.log"), "--parallel", "1", "--queue", "0",
                  "--max_tokens_cap", "100000")
    try:
        s = open_stream(busy.port)
        status, answer = post(busy.port, {"prompt": PROMPT, "max_tokens": 2})
        assert status == 503 and answer["error"]["code"] == "queue_full"
        s.close()
        deadline = time.time() + 10
        while post(busy.port, {"prompt": PROMPT, "max_tokens": 2})[0] != 200:
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        code = busy.stop()
    busy.assert_clean()
    assert code == 0


def test_sigterm_mid_stream_ends_the_stream_properly_and_exits_0(binaries, planted, tmp_path):
    doomed = Server(binaries[0], planted[1], str(tmp_path / "doomed.log"), "--parallel", "1", "--max_tokens_cap", "100000")
    queued = {}
    try:
        s = open_stream(doomed.port)
        waiter = threading.Thread(target=lambda: queued.update(answer=post(doomed.port, {"prompt": PROMPT, "max_tokens": 2})))
        waiter.start()
        time.sleep(0.5)  # the second request waits in the queue
        doomed.proc.send_signal(signal.SIGTERM)
        rest = read_to_end(s, seconds=10)  # a cut stream ends at once; an uncut one would run for minutes
        s.close()
        waiter.join(timeout=10)
        assert rest.endswith(b"data: [DONE]\n\n")
        last = json.loads(rest.split(b"\n\n")[-3][len(b"data: "):])
        assert last["choices"][0]["finish_reason"] == "length"
        assert queued["answer"][0] == 503
        assert doomed.proc.wait(timeout=10) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", doomed.port), timeout=2)
    finally:
        code = doomed.stop()
    doomed.assert_clean()
    assert code == 0


# ---------------------------------------------------------------------------------------------------
# continuous batching (--parallel, default 8): generations decoded together in one step

def test_a_full_batch_of_greedy_requests_gets_the_texts_each_gets_alone(random_server, random_model, enc):
    prompts = ["The for statement", "Hello world", "x", "import os\nimport sys", "1 2 3", "Once upon a", "def f(", "A"]
    bodies = [{"prompt": p, "max_tokens": 12 + i, "temperature": 0} for i, p in enumerate(prompts)]
    alone = [post(random_server.port, b)[1]["choices"][0]["text"] for b in bodies]
    assert alone == [enc.decode(greedy(random_model[0], enc.encode(b["prompt"]), b["max_tokens"])) for b in bodies]
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:  # 8 at once: one batch, ending at different steps
        together = list(pool.map(lambda b: post(random_server.port, b), bodies))
    assert [status for status, _ in together] == [200] * len(bodies)
    assert [answer["choices"][0]["text"] for _, answer in together] == alone


def test_a_seeded_sample_is_the_same_alone_and_in_a_full_batch(random_server):
    sampled = {"prompt": "Hello world", "max_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": 1234}
    alone = post(random_server.port, sampled)[1]["choices"][0]["text"]
    others = [{"prompt": p, "max_tokens": 20, "temperature": 0.8, "seed": i} for i, p in enumerate("abcdefg")]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: post(random_server.port, b), [sampled] + others))
    assert answers[0][1]["choices"][0]["text"] == alone  # its own sampler and seed, whatever else is decoded with it


def test_requests_beyond_the_slots_and_the_queue_get_503(binaries, planted, tmp_path):
    busy = Server(binaries[0], planted[1], str(tmp_path / "busy.log"), "--parallel", "2", "--queue", "0",
                  "--max_tokens_cap", "100000")
    try:
        streams = [open_stream(busy.port), open_stream(busy.port)]  # both slots decode at once
        status, answer = post(busy.port, {"prompt": PROMPT, "max_tokens": 2})
        assert status == 503 and answer["error"]["code"] == "queue_full"
        for s in streams:
            s.close()
    finally:
        code = busy.stop()
    busy.assert_clean()
    assert code == 0


def test_prompts_going_in_by_chunks_beside_running_streams_get_their_texts_alone(random_model, binaries, enc, tmp_path):
    """--prefill_chunk 3: every prompt longer than 3 tokens goes in over several steps, each step also carrying the
    decode rows of the requests already streaming; every request gets model.py's greedy text, as alone."""
    server = Server(binaries[0], random_model[1], str(tmp_path / "chunks.log"), "--prefill_chunk", "3", "--parallel", "6")
    try:
        rng = random.Random(5)
        prompts = [[rng.randrange(enc.n_vocab) for _ in range(length)] for length in (1, 25, 4, 17, 9, 30)]
        bodies = [{"prompt": p, "max_tokens": 8 + i, "temperature": 0} for i, p in enumerate(prompts)]
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda b: post(server.port, b), bodies))
        assert [status for status, _ in answers] == [200] * len(bodies)
        assert [a["choices"][0]["text"] for _, a in answers] == \
            [enc.decode(greedy(random_model[0], b["prompt"], b["max_tokens"])) for b in bodies]
    finally:
        code = server.stop()
    server.assert_clean()
    assert code == 0, server.read_log()[-4000:]


@pytest.mark.parametrize("args", [["--prefill_chunk", "0"], ["--prefill_chunk", "33"], ["--prefill_chunk", "x"],
                                  ["--parallel", "0"], ["--frobnicate"]])
def test_bad_server_arguments_give_one_error_line(random_model, binaries, args):
    result = subprocess.run([binaries[0], random_model[1], "--port", "0", *args], capture_output=True, text=True,
                            env=dict(os.environ, **SANITIZER_ENV), timeout=60)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("gpt-server: no web page")]
    assert result.returncode == 1 and len(errors) == 1 and errors[0].startswith("error: "), result.stderr


def test_help_lists_every_flag_and_exits_0(binaries):
    result = subprocess.run([binaries[0], "--help"], capture_output=True, text=True, env=dict(os.environ, **SANITIZER_ENV),
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: gpt-server model.bin"), result.stdout + result.stderr
    for flag in ("--host", "--port", "--threads", "--parallel", "--prefill_chunk", "--no_prompt_cache", "--max_tokens_cap",
                 "--alias", "--queue", "--timeout", "--max_connections", "--api-key", "--ui"):
        assert f"\n  {flag} " in result.stdout, flag
