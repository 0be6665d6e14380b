"""c/gpt-server's completions API beyond one text prompt, built with -fsanitize=address,undefined: token-id and
batched prompts, n samples, echo and logprobs (streamed too), /tokenize and /detokenize, /metrics and the page at /.

The references: PyTorch's log-softmax of the same weights (model.py), model.generate, tiktoken, the `openai` package,
prometheus_client's parser of the text format. tests/test_c_server.py has the fixtures (the planted-cycle model, the
random one) and the rest of the server's tests; tests/test_lm_eval_server.py runs lm-evaluation-harness through it,
tests/test_web_page.py the page in Chromium.
"""

import concurrent.futures
import json
import math
import os
import random
import socket
import time

import pytest
import torch
import torch.nn.functional as F

from test_c_server import (PROMPT, REPO, Server, binaries, build_jobs, enc, expected_text, greedy, planted,  # noqa: F401
                           post, random_model, raw_exchange, status_of, stream_events)

UI = os.path.join(REPO, "c", "ui.html")
MAX_PROMPTS, MAX_CHOICES, MAX_LOGPROBS = 64, 64, 5  # server.c's limits


@pytest.fixture(scope="module")
def api_server(random_model, binaries, tmp_path_factory):
    """The random model: every token of context changes every logit, so a mixed-up prompt or position shows."""
    s = Server(binaries[0], random_model[1], str(tmp_path_factory.mktemp("log") / "api.log"), "--timeout", "2",
               "--ui", UI, "--max_tokens_cap", "64")
    yield s
    code = s.stop()
    s.assert_clean()
    assert code == 0, s.read_log()[-4000:]


@pytest.fixture(scope="module")
def planted_server(planted, binaries, tmp_path_factory):
    """The planted cycle: its greedy text splits é, 日 and 😀 across tokens, which logprobs must name byte by byte."""
    s = Server(binaries[0], planted[1], str(tmp_path_factory.mktemp("log") / "planted.log"), "--timeout", "2",
               "--max_tokens_cap", "100000")
    yield s
    code = s.stop()
    s.assert_clean()
    assert code == 0, s.read_log()[-4000:]


def reference_logprobs(model, ids):
    """PyTorch's log-softmax over GPT-2's 50,257 tokens (the padded rows are no token) at every position of ids."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))  # (1, len(ids), padded vocabulary)
    return F.log_softmax(logits[0, :, :50257].float(), dim=-1)  # (len(ids), 50257)


def token_name(enc, token):
    """OpenAI's name of a token in logprobs: its text, or "bytes:\\xNN..." when it is not UTF-8 on its own."""
    data = enc.decode_single_token_bytes(token)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def completion(port, body):
    status, answer = post(port, body)
    assert status == 200, answer
    return answer


# ---------------------------------------------------------------------------------------------------
# echo and logprobs against PyTorch

def test_echo_logprobs_equal_pytorchs_log_softmax_at_every_position(api_server, random_model, enc):
    model = random_model[0]
    prompt_ids = enc.encode("The for statement iterates over")
    answer = completion(api_server.port, {"prompt": prompt_ids, "max_tokens": 6, "temperature": 0, "echo": True,
                                          "logprobs": MAX_LOGPROBS})
    generated = greedy(model, prompt_ids, 6)
    ids = prompt_ids + generated
    choice = answer["choices"][0]
    assert choice["text"] == enc.decode(ids)  # echo: the prompt, then the completion
    lp = choice["logprobs"]
    assert lp["tokens"] == [token_name(enc, t) for t in ids]
    reference = reference_logprobs(model, ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # the first token has no context
    for i in range(1, len(ids)):
        assert lp["token_logprobs"][i] == pytest.approx(reference[i - 1, ids[i]].item(), abs=1e-4)
        top = torch.topk(reference[i - 1], MAX_LOGPROBS).indices.tolist()
        top += [] if ids[i] in top else [ids[i]]  # as OpenAI's: the token itself too, where it is not among them
        assert list(lp["top_logprobs"][i]) == [token_name(enc, t) for t in top]  # most likely first
        assert list(lp["top_logprobs"][i].values()) == pytest.approx(reference[i - 1, top].tolist(), abs=1e-4)
        assert lp["top_logprobs"][i][lp["tokens"][i]] == lp["token_logprobs"][i]
    for i in range(len(prompt_ids), len(ids)):  # greedy: each generated token is its position's most likely
        assert lp["token_logprobs"][i] == max(lp["top_logprobs"][i].values())
    text = choice["text"]
    assert lp["text_offset"] == [len(enc.decode(ids[:i])) for i in range(len(ids))]
    assert all(text[offset:].startswith(token) for offset, token in zip(lp["text_offset"], lp["tokens"])
               if not token.startswith("bytes:"))
    cached = answer["usage"].pop("prompt_tokens_details")["cached_tokens"]
    assert answer["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": 6, "total_tokens": len(ids)}
    assert 0 <= cached < len(prompt_ids)


def test_max_tokens_0_with_echo_scores_the_prompt_alone(api_server, random_model, enc):
    prompt = "Hello world, this is a test"
    ids = enc.encode(prompt)
    answer = completion(api_server.port, {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1})
    choice = answer["choices"][0]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 0
    reference = reference_logprobs(random_model[0], ids)
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx([reference[i - 1, ids[i]].item()
                                                                      for i in range(1, len(ids))], abs=1e-4)
    # echo alone: the prompt's text, no logprobs; no echo: nothing
    assert completion(api_server.port, {"prompt": prompt, "max_tokens": 0, "echo": True})["choices"][0] == \
        {"index": 0, "text": prompt, "finish_reason": "length", "logprobs": None}
    assert completion(api_server.port, {"prompt": prompt, "max_tokens": 0})["choices"][0]["text"] == ""


def test_logprobs_without_echo_cover_the_completion_and_its_end(planted_server, planted, enc):
    ids = planted[2]
    answer = completion(planted_server.port, {"prompt": PROMPT, "max_tokens": 14, "temperature": 0, "logprobs": 2})
    lp = answer["choices"][0]["logprobs"]
    want = [ids[(1 + i) % len(ids)] for i in range(14)]
    assert lp["tokens"] == [token_name(enc, t) for t in want]
    assert "bytes:\\xc3" in lp["tokens"] and "bytes:\\xf0" in lp["tokens"]  # é and 😀, split across tokens
    assert all(len(top) == 2 for top in lp["top_logprobs"])
    text = answer["choices"][0]["text"]
    assert text == expected_text(enc, ids, 14)[0]
    # offsets count the characters of the text (U+FFFD for a cut character) before each token's first byte; a token
    # that begins inside a character (its second byte) is past that character
    for offset, token in zip(lp["text_offset"], want):
        prefix = enc.decode(want[:want.index(token)])
        assert offset == len(prefix)
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][-1] < len(text)


def test_streamed_chunks_carry_the_logprobs_of_their_tokens(planted_server, planted, enc):
    body = {"prompt": PROMPT, "max_tokens": 20, "temperature": 0, "echo": True, "logprobs": 3, "stop": [" here"]}
    whole = completion(planted_server.port, body)["choices"][0]
    events = stream_events(planted_server.port, body)
    assert events[-1] == "[DONE]"
    choices = [e["choices"][0] for e in events[:-1]]
    assert "".join(c["text"] for c in choices) == whole["text"] == PROMPT + expected_text(enc, planted[2], 20, [" here"])[0]
    streamed = {key: [x for c in choices for x in c["logprobs"][key]] for key in whole["logprobs"]}
    assert streamed == whole["logprobs"]  # offsets too: they count from the start of the whole text
    assert choices[-1]["finish_reason"] == "stop" and {c["finish_reason"] for c in choices[:-1]} == {None}
    assert len(choices) > 5  # token by token, not at the end
    for c in choices:  # each chunk's tokens begin in its own text (the split é waits for its second byte)
        assert len(c["logprobs"]["tokens"]) == len(c["logprobs"]["text_offset"])


# ---------------------------------------------------------------------------------------------------
# several prompts, token ids, n

def test_each_prompt_of_a_batch_gets_its_own_choice_as_alone(api_server, random_model, enc):
    texts = ["The for statement", "Hello world", "x", "import os\nimport sys", "1 2 3", "Once upon a", "def f(", "A",
             "while True:", "café", "", "12"]  # 12 prompts: more than the 8 slots, so they take turns
    references = [greedy(random_model[0], enc.encode(t) or [enc.eot_token], 5) for t in texts]
    assert not any(enc.eot_token in r for r in references)  # the server would stop there, model.generate does not
    alone = [enc.decode(r) for r in references]
    for prompt in (texts, [enc.encode(t) for t in texts if t]):
        answer = completion(api_server.port, {"prompt": prompt, "max_tokens": 5, "temperature": 0})
        want = alone if len(prompt) == len(texts) else [a for a, t in zip(alone, texts) if t]
        assert [c["index"] for c in answer["choices"]] == list(range(len(want)))
        assert [c["text"] for c in answer["choices"]] == want
        assert answer["usage"]["prompt_tokens"] == sum(len(enc.encode(t)) for t in texts)
        assert answer["usage"]["completion_tokens"] == 5 * len(want)
    one = completion(api_server.port, {"prompt": enc.encode("Hello world"), "max_tokens": 5, "temperature": 0})
    assert one["choices"][0]["text"] == alone[1] and len(one["choices"]) == 1
    # streamed: each choice's events carry its index; together they make the same texts
    events = stream_events(api_server.port, {"prompt": texts[:3], "max_tokens": 5, "temperature": 0})
    by_index = {}
    for e in events[:-1]:
        by_index.setdefault(e["choices"][0]["index"], []).append(e["choices"][0]["text"])
    assert ["".join(by_index[i]) for i in range(3)] == alone[:3]


def test_a_batch_from_concurrent_clients_still_answers_each_its_own(api_server, random_model, enc):
    texts = ["The for statement", "Hello world", "import os"]
    alone = {t: enc.decode(greedy(random_model[0], enc.encode(t), 4)) for t in texts}
    bodies = [{"prompt": texts[i % 3:] + texts[:i % 3], "max_tokens": 4, "temperature": 0} for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda b: completion(api_server.port, b), bodies))
    for body, answer in zip(bodies, answers):
        assert [c["text"] for c in answer["choices"]] == [alone[t] for t in body["prompt"]]


def test_n_samples_each_with_its_own_seed_stream(api_server):
    body = {"prompt": "Hello world", "max_tokens": 8, "temperature": 1.0, "seed": 7}
    four = [c["text"] for c in completion(api_server.port, dict(body, n=4))["choices"]]
    assert four == [c["text"] for c in completion(api_server.port, dict(body, n=4))["choices"]]  # the same seed, the same set
    assert len(set(four)) == 4  # each sample its own stream
    assert completion(api_server.port, body)["choices"][0]["text"] == four[0]  # the first is the seed's own
    other = [c["text"] for c in completion(api_server.port, dict(body, n=4, seed=8))["choices"]]
    assert other != four
    # two prompts, n = 2: prompt-major, as OpenAI orders them; each prompt's samples as it gets alone
    two = completion(api_server.port, dict(body, prompt=["Hello world", "The for"], n=2))
    assert [c["index"] for c in two["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in two["choices"][:2]] == four[:2]
    assert [c["text"] for c in two["choices"][2:]] == \
        [c["text"] for c in completion(api_server.port, dict(body, prompt="The for", n=2))["choices"]]
    assert completion(api_server.port, dict(body, n=3, best_of=3))["choices"][0]["text"] == four[0]


def test_openai_client_sends_token_prompts_and_reads_logprobs(api_server, random_model, enc):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{api_server.port}/v1", api_key="unused", max_retries=0, timeout=30)
    prompts = [enc.encode("The for statement"), enc.encode("Hello world, again")]
    result = client.completions.create(model="planted", prompt=prompts, max_tokens=1, temperature=0, echo=True, logprobs=1)
    assert [c.index for c in result.choices] == [0, 1]
    for prompt, choice in zip(prompts, result.choices):
        ids = prompt + greedy(random_model[0], prompt, 1)
        assert choice.text == enc.decode(ids)
        reference = reference_logprobs(random_model[0], ids)
        assert choice.logprobs.token_logprobs[0] is None
        assert choice.logprobs.token_logprobs[1:] == pytest.approx([reference[i - 1, ids[i]].item()
                                                                    for i in range(1, len(ids))], abs=1e-4)
        top = choice.logprobs.top_logprobs[1]  # the most likely, and the prompt's token where it is not that one
        assert len(top) <= 2 and choice.logprobs.tokens[1] in top
        assert top[choice.logprobs.tokens[1]] == choice.logprobs.token_logprobs[1] and choice.logprobs.text_offset[0] == 0
    chunks = list(client.completions.create(model="planted", prompt="Hello", max_tokens=4, temperature=0, logprobs=2,
                                            stream=True))
    assert sum(len(c.choices[0].logprobs.tokens) for c in chunks if c.choices) == 4


# ---------------------------------------------------------------------------------------------------
# /tokenize, /detokenize

TEXTS = ["The for statement", "  naïve café 世界 🙂\n\n\tend  ", "<|endoftext|>A new document", "", "don't   STOP 1234567"]


def test_tokenize_and_detokenize_agree_with_tiktoken(api_server, enc):
    for text in TEXTS:
        status, answer = post(api_server.port, {"content": text}, path="/tokenize")
        assert status == 200 and answer == {"tokens": enc.encode_ordinary(text)}  # <|endoftext|> is text, as in prompts
        status, answer = post(api_server.port, {"tokens": enc.encode_ordinary(text)}, path="/detokenize")
        assert status == 200 and answer == {"content": text}
    status, answer = post(api_server.port, {"content": "café 日本", "with_pieces": True}, path="/tokenize")
    pieces = answer["tokens"]
    assert [p["id"] for p in pieces] == enc.encode("café 日本")
    for p in pieces:  # llama-server's pieces: the text, or the bytes as numbers when they are not UTF-8 alone
        data = enc.decode_single_token_bytes(p["id"])
        assert p["piece"] == (list(data) if isinstance(p["piece"], list) else data.decode())
    assert any(isinstance(p["piece"], list) for p in pieces)
    split = enc.encode("日")[:1] + enc.encode(" ok")  # a cut character: U+FFFD, as tiktoken's decode
    assert post(api_server.port, {"tokens": split}, path="/detokenize")[1] == {"content": enc.decode(split)}
    assert post(api_server.port, {"tokens": [enc.eot_token]}, path="/detokenize")[1] == {"content": "<|endoftext|>"}


@pytest.mark.parametrize("path, body, param", [
    ("/tokenize", {}, "content"), ("/tokenize", {"content": 5}, "content"), ("/tokenize", {"content": ["a"]}, "content"),
    ("/tokenize", {"content": "a", "with_pieces": "yes"}, "with_pieces"), ("/detokenize", {}, "tokens"),
    ("/detokenize", {"tokens": "464"}, "tokens"), ("/detokenize", {"tokens": [50257]}, "tokens"),
    ("/detokenize", {"tokens": [-1]}, "tokens"), ("/detokenize", {"tokens": [1.5]}, "tokens"),
    ("/detokenize", {"tokens": [[1]]}, "tokens"), ("/tokenize", [1], None), ("/detokenize", b"{", None)])
def test_tokenize_refuses_bad_bodies_in_openai_shape(api_server, path, body, param):
    status, answer = post(api_server.port, body, path=path)
    assert status == 400, answer
    assert answer["error"]["param"] == param and answer["error"]["type"] == "invalid_request_error"
    assert post(api_server.port, None, path=path, method="GET")[0] == 405


# ---------------------------------------------------------------------------------------------------
# /metrics

def metrics(port):
    from prometheus_client.parser import text_string_to_metric_families
    status, raw = post(port, None, path="/metrics", method="GET")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(raw.decode())}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}, families


def test_metrics_in_prometheus_text_format_count_what_happened(planted_server):
    pytest.importorskip("prometheus_client")
    before, families = metrics(planted_server.port)
    assert families["gptserver:requests"].type == "counter"
    assert families["gptserver:time_to_first_token_seconds"].type == "histogram"
    assert families["gptserver:slots_busy"].type == "gauge"
    assert before[("gptserver:slots_total", ())] == 8 and before[("gptserver:slots_busy", ())] == 0
    completion(planted_server.port, {"prompt": PROMPT, "max_tokens": 5, "temperature": 0})
    completion(planted_server.port, {"prompt": [PROMPT, "x"], "max_tokens": 3, "temperature": 0})
    post(planted_server.port, {"prompt": PROMPT, "logprobs": 6})  # a 400
    after, _ = metrics(planted_server.port)

    def grew(name, labels=()):
        return after[(name, labels)] - before[(name, labels)]
    assert grew("gptserver:requests_total", (("outcome", "ok"),)) == 2
    assert grew("gptserver:requests_total", (("outcome", "invalid"),)) == 1
    assert grew("gptserver:prompt_tokens_total") == 3 + 3 + 1
    assert grew("gptserver:generation_tokens_total") == 5 + 3 + 3
    assert grew("gptserver:time_to_first_token_seconds_count") == 2
    assert grew("gptserver:time_to_first_token_seconds_bucket", (("le", "+Inf"),)) == 2
    assert after[("gptserver:prompt_tokens_seconds", ())] > 0 and after[("gptserver:predicted_tokens_seconds", ())] > 0
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items() if k[0].endswith("_bucket"))
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative

    # a long stream holds one slot, then the client goes away: cancelled, and the slot is free again
    s = socket.create_connection(("127.0.0.1", planted_server.port), timeout=10)
    body = json.dumps({"prompt": PROMPT, "max_tokens": 100000, "temperature": 0, "stream": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    deadline = time.time() + 10
    while (busy := metrics(planted_server.port)[0])[("gptserver:slots_busy", ())] != 1:  # from its first decode step
        assert time.time() < deadline, busy
        time.sleep(0.05)
    assert busy[("gptserver:num_requests_running", ())] == 1 and busy[("gptserver:num_requests_waiting", ())] == 0
    s.close()
    deadline, cancelled = time.time() + 10, ("gptserver:requests_total", (("outcome", "cancelled"),))
    while (now := metrics(planted_server.port)[0])[cancelled] == before[cancelled] or now[("gptserver:slots_busy", ())]:
        assert time.time() < deadline, now
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------
# bad values: 400 in OpenAI's shape

TOO_MANY_IDS = list(range(33))  # the random model's block_size is 32
BAD = [("prompt", []), ("prompt", [[]]), ("prompt", [[1, 2], []]), ("prompt", [-1]), ("prompt", [50257]),
       ("prompt", [1.5]), ("prompt", ["a", 1]), ("prompt", [1, "a"]), ("prompt", [[1], "a"]), ("prompt", [None]),
       ("prompt", [{"a": 1}]), ("prompt", [True]), ("prompt", ["x"] * (MAX_PROMPTS + 1)), ("prompt", TOO_MANY_IDS),
       ("prompt", [TOO_MANY_IDS]), ("prompt", [[1e300]]), ("prompt", ["x " * 40]),
       ("n", 0), ("n", -1), ("n", 1.5), ("n", "2"), ("n", True), ("n", MAX_CHOICES + 1), ("best_of", 2),
       ("echo", 1), ("echo", "true"), ("echo", []), ("logprobs", -1), ("logprobs", MAX_LOGPROBS + 1), ("logprobs", 0.5),
       ("logprobs", True), ("logprobs", "1"), ("logprobs", [1])]


@pytest.mark.parametrize("key, value", BAD)
def test_bad_values_of_the_new_fields_are_400_in_openai_shape(api_server, key, value):
    status, answer = post(api_server.port, {"prompt": "Hello", "max_tokens": 2, key: value})
    assert status == 400, answer
    error = answer["error"]
    assert error["param"] == key and error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
    assert "\n" not in error["message"] and len(error["message"]) < 200


def test_more_choices_than_the_cap_is_400(api_server):
    status, answer = post(api_server.port, {"prompt": ["a"] * 8, "n": MAX_CHOICES // 8 + 1, "max_tokens": 1})
    assert status == 400 and answer["error"]["param"] == "n" and str(MAX_CHOICES) in answer["error"]["message"]
    status, answer = post(api_server.port, {"prompt": ["a"] * 8, "n": MAX_CHOICES // 8, "max_tokens": 1})
    assert status == 200 and len(answer["choices"]) == MAX_CHOICES


# ---------------------------------------------------------------------------------------------------
# the page, without a browser (tests/test_web_page.py drives it in Chromium)

def test_the_page_is_one_self_contained_file_served_at_the_root(api_server):
    with socket.create_connection(("127.0.0.1", api_server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: text/html; charset=utf-8" in head
    with open(UI, "rb") as f:
        assert body == f.read()
    page = body.decode()
    for external in ("src=", "href=", "@import", "url(", "//cdn", "http://", "https://"):
        assert external not in page, external  # no script, style, font or image from anywhere else
    assert post(api_server.port, b"{}", path="/")[0] == 405


# ---------------------------------------------------------------------------------------------------
# fuzz: the new fields and endpoints, valid and not

def fuzz_requests(rng, enc):
    """Requests mixing every new field's good and bad values, on every new endpoint: (path, method, body)."""
    prompts = ["Hi", "", ["a", "b"], [464, 329], [[464], [50256, 11]], [], [[]], [-5], [50257], ["a", [1]], [1.5], None,
               "x " * 40, list(range(33)), [["z"]]]
    values = {"n": [1, 2, 3, 0, 65, "2", None], "echo": [True, False, 1, None], "logprobs": [0, 1, 5, 6, -1, True, None],
              "max_tokens": [0, 1, 3, -1], "stream": [True, False], "best_of": [None, 1, 2],
              "temperature": [0, 1.0], "seed": [1, 2], "stop": [None, ["a"], "."]}
    out = []
    for _ in range(250):
        body = {"prompt": rng.choice(prompts)}
        for key, choices in values.items():
            if rng.random() < 0.5:
                body[key] = rng.choice(choices)
        out.append(("/v1/completions", "POST", json.dumps(body).encode()))
    for _ in range(60):
        detokenize = rng.random() < 0.5
        value = rng.choice([[1, 2], [50257], [-1], "text", "", 5, None, [[1]], ["é"], [0.5], list(range(300))])
        key = rng.choice(["tokens", "content"] if rng.random() < 0.3 else ["tokens" if detokenize else "content"])
        body = json.dumps({key: value, "with_pieces": rng.choice([True, False, "x"])}).encode()
        if rng.random() < 0.3:  # mutated bytes
            body = bytearray(body)
            body[rng.randrange(len(body))] = rng.randrange(256)
            body = bytes(body)
        out.append(("/detokenize" if detokenize else "/tokenize", "POST", body))
    for _ in range(20):
        out.append((rng.choice(["/metrics", "/", "/tokenize"]), rng.choice(["GET", "POST", "PUT"]), b"{}"))
    return out


def test_fuzz_the_new_fields_and_endpoints_then_still_serving(api_server, random_model, enc):
    rng = random.Random(29)
    cases = fuzz_requests(rng, enc)
    start = time.time()
    for path, method, body in cases:
        request = b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (method.encode(), path.encode(), len(body)) + body
        answer = raw_exchange(api_server.port, request, half_close=False)
        status = status_of(answer)
        assert status in {200, 400, 405}, (path, body[:200], answer[:300])
        if status != 200:
            assert b'"error":{"message":' in answer
        elif path == "/v1/completions" and b"text/event-stream" not in answer.split(b"\r\n\r\n")[0]:
            json.loads(answer.split(b"\r\n\r\n", 1)[1])  # a whole JSON answer
    print(f"fuzz: {len(cases)} requests in {time.time() - start:.1f} s")
    assert api_server.proc.poll() is None
    ids = enc.encode("The for statement")
    answer = completion(api_server.port, {"prompt": [ids], "max_tokens": 5, "temperature": 0, "echo": True, "logprobs": 1})
    assert answer["choices"][0]["text"] == enc.decode(ids + greedy(random_model[0], ids, 5))
    api_server.assert_clean()
    assert not math.isnan(answer["choices"][0]["logprobs"]["token_logprobs"][-1])


# ---------------------------------------------------------------------------------------------------
# the weight types: q4_0 and bf16 files served as c/gpt runs them


@pytest.mark.parametrize("dtype", ["q4_0", "bf16"])
def test_the_server_runs_4_bit_and_bf16_files_as_the_engine_does(random_model, binaries, enc, tmp_path, dtype):
    import subprocess
    from cheapgpt2 import engine_file
    path = str(tmp_path / f"model_{dtype}.bin")
    engine_file.export(random_model[0], path, dtype=dtype, enc=enc)
    ids = enc.encode_ordinary(PROMPT)
    engine = subprocess.run([binaries[1], path, "--tokens", " ".join(map(str, ids)), "-n", "12", "-t", "0", "--print_ids",
                             "--no_stop"], capture_output=True, text=True, timeout=120)
    assert engine.returncode == 0, engine.stderr
    s = Server(binaries[0], path, str(tmp_path / "server.log"), "--timeout", "2")
    try:
        answer = completion(s.port, {"prompt": ids, "max_tokens": 12, "temperature": 0})
        assert answer["choices"][0]["text"] == enc.decode([int(t) for t in engine.stdout.split()])
        assert f", {dtype}) as" in s.read_log()  # the start line names the file's type
    finally:
        code = s.stop()
    s.assert_clean()
    assert code == 0
