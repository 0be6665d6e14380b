"""export_hf.py against transformers, and eval_lm.py's lm-eval model class against lm-eval's own `hf` model on the export
and against multiple_choice.py, on small random checkpoints (tests/test_eval.py's local task yamls and data)."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import eval_lm
import export_hf
from cheapgpt2.model import GPT
from cheapgpt2.multiple_choice import evaluate, load_examples
from test_eval import CSQA_FILE, HELLASWAG_ROWS, one_error_line, write_jsonl, write_local_tasks
from test_model import randomize_, small_config
from cheapgpt2.tokenizer import get_encoding

transformers = pytest.importorskip("transformers")
lm_eval = pytest.importorskip("lm_eval")
N_CSQA = 10
BLOCK_SIZE = 40


def save_checkpoint(path, seed=0, **overrides):
    """A random ckpt.pt with GPT-2's vocabulary, padded as train.py's unless overridden; random values everywhere,
    so that near-ties are rare."""
    model = GPT(small_config(**{**dict(block_size=BLOCK_SIZE, vocab_size=50304, n_head=2), **overrides})).eval()
    randomize_(model, seed)
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    return model, str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    # unpadded: the padded rows' (random) probability would be in our log-softmax and not in the export's
    model, checkpoint = save_checkpoint(tmp / "ckpt.pt", vocab_size=50257)
    assert export_hf.main([checkpoint, str(tmp / "hf")]) == 0
    data = {"hellaswag": write_jsonl(tmp / "hellaswag.jsonl", HELLASWAG_ROWS)}
    if os.path.exists(CSQA_FILE):
        with open(CSQA_FILE) as f:
            data["commonsense_qa"] = write_jsonl(tmp / "csqa.jsonl", [json.loads(line) for line in f][:N_CSQA])
    tasks = [t for t in write_local_tasks(tmp / "tasks", data) if t != "csqa_mc_local"]  # test_eval.py covers mc
    manager = eval_lm.task_manager_for(str(tmp / "tasks"))  # built once: it reads every lm-eval yaml (seconds)
    return {"model": model, "checkpoint": checkpoint, "hf_dir": str(tmp / "hf"), "data": data, "tasks": tasks, "tmp": tmp,
            "manager": manager}


# -----------------------------------------------------------------------------
# export_hf.py

def test_export_loads_in_transformers_with_our_logits(tmp_path):
    model, checkpoint = save_checkpoint(tmp_path / "ckpt.pt")  # padded to 50,304 rows, as train.py's
    assert export_hf.main([checkpoint, str(tmp_path / "hf")]) == 0
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(hf_model).__name__ == "GPT2LMHeadModel" and hf_model.config.vocab_size == 50257
    idx = torch.randint(0, 50257, (2, BLOCK_SIZE), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(idx)[0][..., :50257]  # the padded rows are cut
        torch.testing.assert_close(hf_model(idx).logits, ours, atol=1e-5, rtol=0)


def test_exported_tokenizer_encodes_like_tiktoken(exported):
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported["hf_dir"])
    enc = get_encoding()
    texts = ["Hello, I'm a language model,", "  naïve café 世界 🙂\n\n\tend  ", "don't   STOP 1234567 ...!?",
             "<|endoftext|>A new document", "\r\n x \u00a0y", HELLASWAG_ROWS[1]["ctx_a"]]
    for text in texts:
        assert tokenizer.encode(text) == enc.encode(text, allowed_special="all"), text
        assert tokenizer.decode(enc.encode(text, allowed_special="all")) == text
    assert tokenizer.eos_token_id == 50256


@pytest.mark.parametrize("overrides, named", [(dict(pos_emb="rope"), "RoPE"), (dict(mlp="swiglu"), "non-GELU"),
                                              (dict(tie_embeddings=False, logit_softcap=15.0), "untied head")])
def test_export_refuses_other_variants_in_one_line(tmp_path, capsys, overrides, named):
    _, checkpoint = save_checkpoint(tmp_path / "ckpt.pt", **overrides)
    assert export_hf.main([checkpoint, str(tmp_path / "hf")]) == 1
    err = one_error_line(capsys)
    assert named in err and "eval_lm.py" in err and not os.path.exists(tmp_path / "hf")


# -----------------------------------------------------------------------------
# eval_lm.py

def by_doc(samples):
    return sorted(samples, key=lambda s: s["doc_id"])


def test_results_equal_lm_evals_hf_model_on_the_export(exported):
    manager = exported["manager"]
    lm = eval_lm.make_lm_class()(exported["model"], batch_size=5, device="cpu")
    ours = lm_eval.simple_evaluate(model=lm, tasks=exported["tasks"], task_manager=manager, limit=6, log_samples=True)
    theirs = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={exported['hf_dir']}", tasks=exported["tasks"],
                                     task_manager=manager, limit=6, batch_size=16, device="cpu", log_samples=True)
    for task in exported["tasks"]:
        for a, b in zip(by_doc(ours["samples"][task]), by_doc(theirs["samples"][task]), strict=True):
            np.testing.assert_allclose([r[0] for r in a["filtered_resps"]], [r[0] for r in b["filtered_resps"]], atol=1e-4, rtol=0)
            assert a["acc"] == b["acc"]
        assert ours["results"][task]["acc,none"] == theirs["results"][task]["acc,none"]


def test_rolling_loglikelihood_and_generation_equal_lm_evals_hf_model(exported):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    ours = eval_lm.make_lm_class()(exported["model"], batch_size=3, device="cpu")
    theirs = HFLM(pretrained=exported["hf_dir"], batch_size=3, device="cpu")
    long_text = " ".join(row["ctx_a"] for row in HELLASWAG_ROWS)  # several windows of BLOCK_SIZE tokens
    texts = [long_text, "Short text.", HELLASWAG_ROWS[4]["ctx_a"]]
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    assert len(get_encoding().encode(long_text)) > 3 * BLOCK_SIZE
    np.testing.assert_allclose(ours.loglikelihood_rolling(rolling), theirs.loglikelihood_rolling(rolling), atol=1e-3, rtol=1e-6)
    # a stop string the random model is sure to produce: a piece of its own free-running text
    free = ours.generate_until([Instance("generate_until", {}, ("Once upon a time", {"until": [], "max_gen_toks": 12}), 0)])[0]
    stop = free[len(free) // 2:len(free) // 2 + 3]
    options = [{"until": [stop], "max_gen_toks": 12, "do_sample": False}, {"until": [".", " the"], "max_gen_toks": 20},
               {"max_gen_toks": 8, "temperature": 0.0}]
    generate = [Instance("generate_until", {}, (context, o), i) for i, (context, o) in
                enumerate(zip(["Once upon a time", long_text, "Q: Why?\nA:"], options))]
    generated = ours.generate_until(generate)
    assert generated == theirs.generate_until(generate)
    assert len(stop) == 3 and generated[0] == free[:free.index(stop)]  # cut before the stop string


def test_loglikelihoods_equal_multiple_choices_for_a_modern_checkpoint(tmp_path):
    from lm_eval.api.instance import Instance
    model, _ = save_checkpoint(tmp_path / "ckpt.pt", pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True,
                               tie_embeddings=False, logit_softcap=15.0, bias=False)
    lm = eval_lm.make_lm_class()(model, batch_size=4, device="cpu")
    data = {"hellaswag": write_jsonl(tmp_path / "hellaswag.jsonl", HELLASWAG_ROWS)}
    if os.path.exists(CSQA_FILE):
        data["commonsense_qa"] = CSQA_FILE
    for task, dataset in [("hellaswag", "hellaswag"), ("commonsense_qa_cloze", "commonsense_qa"), ("commonsense_qa", "commonsense_qa")]:
        if dataset not in data:
            continue
        examples = load_examples(task, data[dataset], limit=6)
        requests = [Instance("loglikelihood", {}, (ex["context"], " " + choice), i)
                    for ex in examples for i, choice in enumerate(ex["choices"])]
        theirs = [ll for ll, _ in lm.loglikelihood(requests)]
        ours = [ll for scored in evaluate(model, examples)["examples"] for ll in scored["loglikelihoods"]]
        np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0, err_msg=task)


def test_cli_prints_the_table_and_writes_the_json(exported, capsys, monkeypatch):
    monkeypatch.setattr(eval_lm, "task_manager_for", lambda include_path: exported["manager"])
    out = exported["tmp"] / "results.json"
    argv = [exported["checkpoint"], "--tasks", "hellaswag_local", "--limit", "3", "--include_path", str(exported["tmp"] / "tasks"),
            "--device", "cpu", "--out", str(out)]
    assert eval_lm.main(argv) == 0
    assert "hellaswag_local" in capsys.readouterr().out
    results = json.loads(out.read_text())
    assert 0 <= results["results"]["hellaswag_local"]["acc,none"] <= 1


def test_cli_errors_are_one_line(exported, capsys, monkeypatch):
    monkeypatch.setattr(eval_lm, "task_manager_for", lambda include_path: exported["manager"])
    assert eval_lm.main([exported["checkpoint"], "--tasks", "no_such_task", "--include_path", str(exported["tmp"] / "tasks")]) == 1
    assert "no task no_such_task" in one_error_line(capsys)
    monkeypatch.setitem(__import__("sys").modules, "lm_eval", None)  # as if lm-eval were not installed
    assert eval_lm.main([exported["checkpoint"], "--tasks", "hellaswag"]) == 1
    assert "lm-evaluation-harness is not installed" in one_error_line(capsys)
