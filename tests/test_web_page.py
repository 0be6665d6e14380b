"""c/gpt-server's web page (c/ui.html at GET /) in a real browser: headless Chromium from the system's packages
(`apt-get install chromium`; .ci/run installs it), driven by Playwright's Python package through executable_path.
Skipped, with the reason, where no Chromium is found. The server is the sanitized build of tests/test_c_server.py
on its planted-cycle model, whose greedy text splits é, 日 and 😀 across tokens.
"""

import os
import shutil
import time

import pytest

from test_c_server import PROMPT, Server, binaries, build_jobs, enc, planted, post  # noqa: F401
from test_c_server_api import UI, metrics

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (requirements-dev.txt)")


def find_chromium():
    """$CHROMIUM, else Debian's chromium binary, else the first browser of that family on PATH."""
    candidates = [os.environ.get("CHROMIUM"), "/usr/lib/chromium/chromium"]
    candidates += [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: apt-get install chromium (or set CHROMIUM)")


@pytest.fixture(scope="module")
def page_server(planted, binaries, tmp_path_factory):
    s = Server(binaries[0], planted[1], str(tmp_path_factory.mktemp("log") / "page.log"), "--ui", UI, "--timeout", "5",
               "--max_tokens_cap", "100000")
    yield s
    code = s.stop()
    s.assert_clean()
    assert code == 0, s.read_log()[-4000:]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, page_server):
    """The page, loaded; every URL the browser asks for is recorded."""
    context = browser.new_context()
    page = context.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(f"http://127.0.0.1:{page_server.port}/")
    page.wait_for_function("document.getElementById('model').textContent === 'planted'")
    yield page
    context.close()


def set_fields(page, **fields):
    for name, value in fields.items():
        page.fill(f"#{name}", str(value))


def test_greedy_text_in_the_page_equals_the_apis_with_each_tokens_probability(page, page_server):
    body = {"prompt": PROMPT, "max_tokens": 24, "temperature": 0, "logprobs": 5}
    status, answer = post(page_server.port, body)
    assert status == 200
    want = answer["choices"][0]
    set_fields(page, prompt=PROMPT, max_tokens=24, temperature=0)
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.includes('finish_reason')", timeout=30000)
    assert page.inner_text("#error") == ""
    assert page.eval_on_selector("#completion", "e => e.textContent") == want["text"]  # é, 日, 😀 whole
    assert page.eval_on_selector("#prompt-echo", "e => e.textContent") == PROMPT
    assert "24 tokens" in page.inner_text("#status") and "finish_reason: length" in page.inner_text("#status")
    # a span per token where its text is exactly the token's; its tint is its probability under the model
    spans = page.eval_on_selector_all(".token", "es => es.map(e => [e.textContent, Number(e.dataset.prob), "
                                               "getComputedStyle(e).backgroundColor])")
    lp = want["logprobs"]
    whole = {t: p for t, p in zip(lp["tokens"], lp["token_logprobs"]) if not t.startswith("bytes:")}
    exact = [(text, prob) for text, prob, _ in spans if text in whole]
    assert len(exact) >= 10
    for text, prob in exact:
        assert prob == pytest.approx(2.718281828459045 ** whole[text], rel=1e-4)
    colour_of = "p => { const e = document.createElement('span'); e.style.background = tint(p); document.body.appendChild(e); " \
                "const c = getComputedStyle(e).backgroundColor; e.remove(); return c; }"
    assert all(colour == page.evaluate(colour_of, prob) for _, prob, colour in spans)
    assert page.evaluate(colour_of, 0.02) != page.evaluate(colour_of, 0.98)  # this model is sure of each token: green
    # hovering a token shows it and its five most likely alternatives, with their probabilities
    page.hover(".token >> nth=2")
    page.wait_for_selector("#tip", state="visible")
    rows = page.eval_on_selector_all("#tip tr", "rs => rs.map(r => [r.textContent, r.className])")
    assert len(rows) == 5 and all(text.endswith("%") for text, _ in rows)
    assert [cls for _, cls in rows].count("chosen") == 1  # the greedy token: the most likely, in bold
    assert all(url.startswith(f"http://127.0.0.1:{page_server.port}/") for url in page.requested), page.requested


def test_stop_cancels_the_request_and_the_server_frees_the_slot(page, page_server):
    cancelled = ("gptserver:requests_total", (("outcome", "cancelled"),))
    before = metrics(page_server.port)[0]
    set_fields(page, prompt=PROMPT, max_tokens=100000, temperature=0)  # minutes of work if nothing stopped it
    page.click("#generate")
    page.wait_for_function("document.getElementById('completion').textContent.length > 20", timeout=30000)
    assert page.is_enabled("#stop") and not page.is_enabled("#generate")
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('stopped after')", timeout=10000)
    assert page.is_enabled("#generate") and page.inner_text("#error") == ""
    deadline = time.time() + 10
    while (now := metrics(page_server.port)[0])[cancelled] == before[cancelled] or now[("gptserver:slots_busy", ())]:
        assert time.time() < deadline, now  # the server saw the client go and freed its slot
        time.sleep(0.05)
    assert "(client went away)" in page_server.read_log()


def test_an_error_shows_the_servers_one_line_message(page, page_server):
    status, answer = post(page_server.port, {"prompt": PROMPT, "temperature": 5})
    assert status == 400
    set_fields(page, prompt=PROMPT, max_tokens=8, temperature=5)
    page.click("#generate")
    page.wait_for_function("document.getElementById('error').textContent !== ''", timeout=10000)
    assert page.inner_text("#error") == answer["error"]["message"] == "temperature must be between 0 and 2"
    assert page.eval_on_selector("#completion", "e => e.textContent") == ""


def test_a_server_with_an_api_key_asks_for_it_once_and_then_answers(browser, planted, binaries, tmp_path):
    server = Server(binaries[0], planted[1], str(tmp_path / "key.log"), "--ui", UI, "--api-key", "page-key")
    asked = []
    context = browser.new_context()
    try:
        page = context.new_page()
        page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept("wrong" if not asked[1:] else "page-key")))
        page.goto(f"http://127.0.0.1:{server.port}/")  # the page needs no key; /v1/models does: asked twice, the first refused
        page.wait_for_function("document.getElementById('model').textContent === 'planted'")
        assert asked == ["This server needs its API key:", "That API key was refused. This server's API key:"]
        want = post(server.port, {"prompt": PROMPT, "max_tokens": 12, "temperature": 0},
                    headers={"Authorization": "Bearer page-key"})[1]["choices"][0]["text"]
        set_fields(page, prompt=PROMPT, max_tokens=12, temperature=0)
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes('finish_reason')", timeout=30000)
        assert page.eval_on_selector("#completion", "e => e.textContent") == want
        assert len(asked) == 2  # the key, once accepted, goes with every later request
    finally:
        context.close()
        code = server.stop()
    server.assert_clean()
    assert code == 0
