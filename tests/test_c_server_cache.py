"""c/gpt-server's prompt cache: a prompt whose prefix a slot holds (a follow-up of a document, lm-eval's choices of
one question, n samples of one prompt) prefills only the rest, and every answer is bit for bit a fresh server's.

Two servers on the same weights, one with the cache (the default) and one with --no_prompt_cache, get the same
requests one after another; every answer (text, tokens, every logprob and top-5 logprob as its float, sampled tokens
with a seed) must be identical, while the cached one says it reused tokens (usage.prompt_tokens_details and
/metrics). fp32 and q8_0, GPT-2's and the speedrun's family (a document mask and a window, which make a cached row
depend on the tokens before it), generation past block_size, prompts that differ only in their last token. Under
AddressSanitizer/UBSan and ThreadSanitizer (tests/test_c_server.py's builds).
"""

import random

import pytest

from test_c_engine import SPEEDRUN, config, random_model
from test_c_server import Server, binaries, build_jobs, post  # noqa: F401
from test_c_server_clients import metrics

from cheapgpt2 import engine_file

pytestmark = pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="needs a C compiler (cc)")
FAMILIES = {"gpt2": dict(), "speedrun": dict(vocab_size=50304, **SPEEDRUN)}


@pytest.fixture(scope="module", params=[(f, d) for f in FAMILIES for d in ("fp32", "q8_0")], ids=lambda p: "-".join(p))
def servers(request, binaries, tmp_path_factory):
    family, dtype = request.param
    out = tmp_path_factory.mktemp("cache")
    path = str(out / "model.bin")
    engine_file.export(random_model(config(**FAMILIES[family]), seed=21), path, dtype=dtype, group_size=32)
    cached = Server(binaries[0], path, str(out / "cached.log"), "--parallel", "4")
    fresh = Server(binaries[0], path, str(out / "fresh.log"), "--parallel", "4", "--no_prompt_cache")
    yield cached, fresh, family
    for s in (cached, fresh):
        code = s.stop()
        s.assert_clean()
        assert code == 0, s.read_log()[-3000:]


def answer_of(server, body):
    """The answer without what differs between servers (id, time) and with the cached tokens apart."""
    status, answer = post(server.port, body)
    assert status == 200, answer
    del answer["id"], answer["created"]
    return answer, answer["usage"].pop("prompt_tokens_details")["cached_tokens"]


def requests(family):
    """The requests, in order: a document, its follow-ups, two prompts differing in their last token, generation past
    block_size (32), an lm-eval-shaped batch (echo, logprobs, max_tokens 0) twice, n seeded samples of one prompt."""
    rng = random.Random(5)
    vocab = 96 if family == "gpt2" else 1000
    doc = [rng.randrange(vocab) for _ in range(20)]
    if family == "speedrun":
        doc[6] = 50256  # <|endoftext|>: a new document begins, and with it what the rows after it attend to
    ask = lambda n: [rng.randrange(vocab) for _ in range(n)]
    greedy = dict(temperature=0, logprobs=5)
    out = [dict(prompt=doc, max_tokens=4, **greedy)]
    out += [dict(prompt=doc + ask(3), max_tokens=6, **greedy) for _ in range(4)]
    out += [dict(prompt=doc[:18] + [last], max_tokens=5, **greedy) for last in (1, 2)]
    out += [dict(prompt=doc + ask(3), max_tokens=20, **greedy), dict(prompt=doc + ask(2), max_tokens=20, **greedy)]
    choices = [doc + ask(2) for _ in range(5)]
    out += [dict(prompt=choices, max_tokens=0, echo=True, logprobs=5)] * 2
    out += [dict(prompt=doc + ask(1), n=3, max_tokens=8, temperature=1.0, seed=7, logprobs=2)]
    out += [dict(prompt=doc + ask(1), max_tokens=8, temperature=0.9, seed=3, cache_prompt=False)]
    return out


def test_cached_answers_equal_a_fresh_servers_bit_for_bit(servers):
    cached, fresh, family = servers
    before = metrics(cached.port)
    reused = []
    for body in requests(family):
        (ours, hit), (theirs, none) = answer_of(cached, body), answer_of(fresh, body)
        assert ours == theirs, body  # texts, tokens, every logprob as the same float (9 digits), sampled tokens
        assert none == 0
        reused.append(hit)
    after = metrics(cached.port)
    # the follow-ups reused the document (20 tokens); the prompt differing in its last token, its first 18. A scored
    # prompt feeds again the last shared token, whose logits score the next one: the lm-eval batch's 2nd to 5th
    # prompts reused 19 tokens of the 1st's, and the same batch asked again, all 5 (the cache has no logits)
    assert all(hit >= 20 for hit in reused[1:5]), reused
    assert reused[6] == 18, reused
    assert reused[9:11] == [4 * 19, 5 * 19], reused
    assert reused[12] == 0  # cache_prompt false
    hits = after[("gptserver:prefix_cache_hits_total", ())] - before[("gptserver:prefix_cache_hits_total", ())]
    queries = after[("gptserver:prefix_cache_queries_total", ())] - before[("gptserver:prefix_cache_queries_total", ())]
    assert sum(reused) <= hits <= queries and hits >= sum(reused) + 2 * 20  # the n samples copied each other's rows
    assert metrics(fresh.port)[("gptserver:prefix_cache_hits_total", ())] == 0
