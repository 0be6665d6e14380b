"""lm-evaluation-harness's own API client scoring through c/gpt-server (built with -fsanitize=address,undefined), as
`lm_eval --model local-completions --model_args base_url=.../v1/completions,model=davinci,tokenizer_backend=tiktoken`
runs it: LocalCompletionsAPI sends batches of token-id prompts with echo, logprobs 1 and max_tokens 1, and reads
choices[i].logprobs. Its loglikelihoods of CommonsenseQA's choices equal eval_lm.py's in-process model on the same
checkpoint (fp32 to 1e-4 per choice, the same predicted answers), a loglikelihood_rolling request too, and the q8_0 export's
equal the q8_0 scheme of quantize.py in PyTorch within the quantization's tolerance.

tiktoken's encoding_for_model("davinci") is r50k_base, GPT-2's BPE (the one in the offline cache; "gpt2" maps to
another name). No hub download: the Instances are built from ../shared/data's questions as tests/test_eval_lm.py does.
"""

import dataclasses
import os
import subprocess

import numpy as np
import pytest
import torch

import eval_lm
from cheapgpt2.model import GPT
from conftest import REPO, makefile_sources, march_native
from cheapgpt2.checkpoint import load_model
from cheapgpt2.multiple_choice import load_examples
from cheapgpt2.quantize import quantize
from test_c_server import Server
from test_eval import CSQA_FILE
from test_model import randomize_, small_config
from cheapgpt2 import engine_file
from cheapgpt2.tokenizer import get_encoding

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("tenacity", reason="lm-eval's API models need its [api] extras (requirements-dev.txt)")
pytestmark = pytest.mark.skipif(not os.path.exists(CSQA_FILE), reason=f"needs CommonsenseQA's questions in {CSQA_FILE}")

BLOCK_SIZE = 96     # the CommonsenseQA prompts fit: neither side truncates
N_QUESTIONS = 12    # of each format: 120 loglikelihood requests
BATCH_SIZE = 8      # prompts per request, more than one batch of slots apart
Q8_TOLERANCE = 1e-2  # per choice, against quantize.py's q8_0 in PyTorch (measured here: 5e-6; fp32's is 0.03 away)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A ckpt.pt of random weights (wide, so that no two choices are near a tie) with the padded vocabulary every
    trained model has (50,304 rows for 50,257 tokens; the padding rows random, so they would carry a probability
    if any path counted them), and its fp32 and q8_0 exports."""
    tmp = tmp_path_factory.mktemp("lm_eval_server")
    model = GPT(small_config(block_size=BLOCK_SIZE, vocab_size=50304, n_layer=2, n_head=2, n_embd=64)).eval()
    randomize_(model, seed=3)
    path = str(tmp / "ckpt.pt")
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    model = load_model(path)  # as eval_lm.py loads it
    files = {}
    for dtype in ("fp32", "q8_0"):
        files[dtype] = str(tmp / f"model_{dtype}.bin")
        engine_file.export(model, files[dtype], dtype=dtype, group_size=64)
    return model, files


@pytest.fixture(scope="module")
def server_binary(tmp_path_factory):
    """The server under the sanitizers, with -march=native's kernels (the portable matmul under ASan takes 10x as
    long: 35 s instead of 3.5 s for one format's requests here)."""
    binary = str(tmp_path_factory.mktemp("bin") / "gpt-server")
    cmd = ["cc", "-std=c11", "-O2", "-g", *march_native(), "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-o", binary, *makefile_sources("SERVER_SOURCES"), "-lm", "-lpthread"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return binary


@pytest.fixture(scope="module")
def servers(checkpoint, server_binary, tmp_path_factory):
    log = tmp_path_factory.mktemp("log")
    started = {dtype: Server(server_binary, path, str(log / f"{dtype}.log"), "--timeout", "5", "--parallel", "4")
               for dtype, path in checkpoint[1].items()}
    yield started
    for s in started.values():
        code = s.stop()
        s.assert_clean()
        assert code == 0, s.read_log()[-4000:]


def client(server):
    """lm-eval's local-completions model, as its command line builds it from --model_args."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    return LocalCompletionsAPI(base_url=f"http://127.0.0.1:{server.port}/v1/completions", model="davinci",
                               tokenizer_backend="tiktoken", tokenized_requests=True, batch_size=BATCH_SIZE,
                               max_length=BLOCK_SIZE, max_retries=1, timeout=120)


def requests_of(task):
    from lm_eval.api.instance import Instance
    examples = load_examples(task, CSQA_FILE, limit=N_QUESTIONS)
    requests = [Instance("loglikelihood", {}, (ex["context"], " " + choice), i)
                for ex in examples for i, choice in enumerate(ex["choices"])]
    return examples, requests


def predictions(examples, loglikelihoods):
    out, at = [], 0
    for ex in examples:
        out.append(int(np.argmax(loglikelihoods[at:at + len(ex["choices"])])))
        at += len(ex["choices"])
    return out


@pytest.mark.parametrize("task", ["commonsense_qa", "commonsense_qa_cloze"])
def test_lm_evals_client_through_the_server_scores_as_eval_lm_in_process(checkpoint, servers, task):
    model = checkpoint[0]
    examples, requests = requests_of(task)
    served = client(servers["fp32"]).loglikelihood(requests)
    in_process = eval_lm.make_lm_class()(model, batch_size=BATCH_SIZE, device="cpu").loglikelihood(requests)
    np.testing.assert_allclose([ll for ll, _ in served], [ll for ll, _ in in_process], atol=1e-4, rtol=0)
    assert [greedy for _, greedy in served] == [greedy for _, greedy in in_process]
    assert predictions(examples, [ll for ll, _ in served]) == predictions(examples, [ll for ll, _ in in_process])
    assert len({len(ex["choices"]) for ex in examples}) == 1 and len(requests) > 4 * BATCH_SIZE


def test_a_loglikelihood_rolling_request_equals_eval_lm_in_process(checkpoint, servers):
    from lm_eval.api.instance import Instance
    examples = load_examples("commonsense_qa_cloze", CSQA_FILE, limit=40)
    long_text = " ".join(ex["context"] for ex in examples)  # many windows
    texts = [long_text, examples[0]["context"], "Short text."]
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    served = client(servers["fp32"]).loglikelihood_rolling(rolling)

    class SameWindows(eval_lm.make_lm_class()):
        """eval_lm.py's model with the API client's windows: lm-eval's API models keep one position of max_length
        for the generated token and one for the context token, so their windows are max_length - 2 tokens."""
        @property
        def max_length(self):
            return BLOCK_SIZE - 2

    in_process = SameWindows(checkpoint[0], device="cpu").loglikelihood_rolling(rolling)
    np.testing.assert_allclose(served, in_process, atol=1e-3, rtol=1e-6)
    assert len(get_encoding().encode(long_text)) > 5 * BLOCK_SIZE
    # one window: the plain eval_lm.py model gives the same, its windows being the whole text either way
    plain = eval_lm.make_lm_class()(checkpoint[0], device="cpu").loglikelihood_rolling(rolling[2:])
    np.testing.assert_allclose(served[2:], plain, atol=1e-3)


def test_q8_0_through_the_server_scores_as_the_q8_0_scheme_in_process(checkpoint, servers):
    examples, requests = requests_of("commonsense_qa_cloze")
    served = [ll for ll, _ in client(servers["q8_0"]).loglikelihood(requests)]
    scheme = quantize(checkpoint[0], "q8_0")  # what eval_lm.py --quant q8_0 scores: quantize.py's definition
    in_process = [ll for ll, _ in eval_lm.make_lm_class()(scheme, batch_size=BATCH_SIZE, device="cpu").loglikelihood(requests)]
    np.testing.assert_allclose(served, in_process, atol=Q8_TOLERANCE, rtol=0)
    fp32 = [ll for ll, _ in client(servers["fp32"]).loglikelihood(requests)]
    assert np.abs(np.array(served) - fp32).max() > 1e-5  # the q8_0 file was quantized
    # the same answers, but where two choices are within the tolerance of each other
    margins = []
    for ex, at in zip(examples, range(0, len(requests), 5)):
        top2 = sorted(in_process[at:at + len(ex["choices"])])[-2:]
        margins.append(top2[1] - top2[0])
    agree = [a == b or m < 2 * Q8_TOLERANCE for a, b, m in
             zip(predictions(examples, served), predictions(examples, in_process), margins)]
    assert all(agree)
