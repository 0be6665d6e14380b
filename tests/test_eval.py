"""multiple_choice.py and the eval scripts, against lm-evaluation-harness itself on the same model and data.

The parity tests run lm-eval's HFLM on a small random GPT-2 (the real 50257-token vocabulary, since the
tokenizer is the real r50k_base) with task yamls that include lm-eval's own commonsense_qa and hellaswag
yamls and only point them at local data, so a change to lm-eval's prompts shows up here.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval_commonsense_qa
import eval_hellaswag
from cheapgpt2.multiple_choice import write_local_tasks  # noqa: F401 (test_eval_lm.py takes it from here too)
from cheapgpt2.model import GPT, GPTConfig
from cheapgpt2.multiple_choice import choose, evaluate, hellaswag_preprocess, load_examples, model_input
from cheapgpt2.tokenizer import get_encoding

CSQA_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "commonsense_qa_validation.jsonl")
N_CSQA = 24  # questions of the real validation split in the parity test
BLOCK_SIZE = 40  # short enough that lm-eval and we both left-truncate some of the lettered (mc) prompts

# Hand-written rows in Hugging Face's Rowan/hellaswag schema, built to exercise lm-eval's preprocess():
# " [title]" -> ". ", other [brackets] removed, double spaces, ctx_b capitalized (and the rest lowercased),
# an empty ctx_b, a context ending in " [title]" (a trailing space that moves into the continuation),
# and a context longer than BLOCK_SIZE.
HELLASWAG_ROWS = [
    {"ind": 4, "activity_label": "Shoveling snow", "ctx_a": "A man in a red coat stands in a driveway holding a shovel.",
     "ctx_b": "he", "ctx": "", "split": "val", "split_type": "indomain", "source_id": "activitynet~v_a", "label": "2",
     "endings": ["throws the shovel at a passing car.", "sits down and reads a newspaper in the snow.",
                 "pushes the snow to the side of the driveway.", "paints the fence  bright green."]},
    {"ind": 9, "activity_label": "Home and Garden", "ctx_a": "[header] How to clean a cast iron pan [title] Rinse the pan with hot water.",
     "ctx_b": "", "ctx": "", "split": "val", "split_type": "zeroshot", "source_id": "wikihow~1", "label": "0",
     "endings": ["[step] Avoid soap, which strips the seasoning. [title] Dry the pan on the stove.",
                 "[substeps] Put the pan in the dishwasher  on the hottest setting.",
                 "[step] Leave the pan to soak overnight in a bucket of  sand.",
                 "[title] Paint the pan. [step] Any color will do."]},
    {"ind": 17, "activity_label": "Playing violin", "ctx_a": "  A girl lifts a violin to her chin  and raises the bow.",
     "ctx_b": "The Girl", "ctx": "", "split": "val", "split_type": "indomain", "source_id": "activitynet~v_b", "label": "1",
     "endings": [" drops the violin into a pool.", "begins to play a slow song while swaying.",
                 "eats the bow.", "puts the violin back in its case and  leaves."]},
    {"ind": 23, "activity_label": "Food and Entertaining", "ctx_a": "[header] How to make iced tea [title] Boil four cups of water.",
     "ctx_b": "[title]", "ctx": "", "split": "val", "split_type": "indomain", "source_id": "wikihow~2", "label": "3",
     "endings": ["Freeze the kettle.", "[step] Pour the water on the floor.", "Drink the boiling water at once.",
                 "Add six tea bags and let them steep for five minutes."]},
    {"ind": 31, "activity_label": "Personal Care and Style",
     "ctx_a": "[header] How to tie a tie [title] Drape the tie around your neck. [step] The wide end should hang about a "
              "foot lower than the narrow end, on your right side. [title] Cross the wide end over the narrow end. "
              "[step] Hold the crossing point with your left hand while you bring the wide end up through the loop.",
     "ctx_b": "then", "ctx": "", "split": "val", "split_type": "zeroshot", "source_id": "wikihow~3", "label": "1",
     "endings": ["throw the tie away.", "pull it down through the front knot and tighten.",
                 "iron the tie  while wearing it.", "[substeps] cut the narrow end off."]},
    {"ind": 40, "activity_label": "Kite flying", "ctx_a": "Two boys run across a field pulling a kite on a string.",
     "ctx_b": "the kite", "ctx": "", "split": "val", "split_type": "indomain", "source_id": "activitynet~v_c", "label": "0",
     "endings": ["rises into the air and catches the wind.", "turns into a bird.",
                 "is eaten by the boys.", "sings a song."]},
]

# Hand-written CommonsenseQA rows (Hugging Face schema) for the tests that do not need the real file.
CSQA_ROWS = [
    {"id": "q1", "question": "Where would you put a cup after washing it?", "question_concept": "cup",
     "choices": {"label": list("ABCDE"), "text": ["cupboard", "garden", "car engine", "oven", "mailbox"]}, "answerKey": "A"},
    {"id": "q2", "question": "What do people usually do at night?", "question_concept": "people",
     "choices": {"label": list("ABCDE"), "text": ["sleep", "mow the lawn", "go to school", "sunbathe", "harvest"]}, "answerKey": "A"},
    {"id": "q3", "question": "  A bird builds its nest where?  ", "question_concept": "bird",
     "choices": {"label": list("ABCDE"), "text": ["sea", "tree", "desert", "kitchen sink", "library of congress"]}, "answerKey": "B"},
]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def tiny_gpt(block_size=64, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()


# -----------------------------------------------------------------------------
# parity with lm-evaluation-harness

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random GPT-2 saved by transformers, the data files, and lm-eval's per-sample results on them."""
    import lm_eval
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers.integrations.tiktoken import convert_tiktoken_to_fast

    tmp = tmp_path_factory.mktemp("lm_eval")
    hf_config = transformers.GPT2Config(vocab_size=50257, n_positions=BLOCK_SIZE, n_embd=32, n_layer=2, n_head=2,
                                        initializer_range=0.3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()  # a wide init: log-likelihoods far apart, no near-ties
    hf_model.save_pretrained(tmp / "model")
    convert_tiktoken_to_fast(get_encoding(), str(tmp / "tokenizer"))
    eot = "<|endoftext|>"
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp / "tokenizer" / "tokenizer.json"),
                                                     eos_token=eot, bos_token=eot, pad_token=eot)

    data = {"hellaswag": write_jsonl(tmp / "hellaswag.jsonl", HELLASWAG_ROWS)}
    if os.path.exists(CSQA_FILE):
        with open(CSQA_FILE) as f:
            data["commonsense_qa"] = write_jsonl(tmp / "csqa.jsonl", [json.loads(line) for line in f][:N_CSQA])

    tasks = write_local_tasks(tmp / "tasks", data)
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=16), tasks=tasks,
                                  task_manager=TaskManager(include_path=str(tmp / "tasks")), num_fewshot=0, log_samples=True)
    samples = {name: sorted(s, key=lambda s: s["doc_id"]) for name, s in out["samples"].items()}
    return {"model_dir": str(tmp / "model"), "data": data, "samples": samples, "tmp": tmp}


def run_ours(script, reference, dataset, out_name):
    out = reference["tmp"] / out_name
    argv = ["--hf", reference["model_dir"], "--data", reference["data"][dataset], "--device", "cpu",
            "--batch_size", "5", "--out", str(out)]
    assert script.main(argv) == 0
    with open(out) as f:
        return json.load(f)


def assert_matches_lm_eval(ours, examples, samples, task):
    assert ours["n"] == len(samples) == len(examples)
    for ex, scored, sample in zip(examples, ours["examples"], samples):
        # the same prompts, character for character: (context, " " + choice) per choice
        assert [(ex["context"], " " + c) for c in ex["choices"]] == [tuple(a[:2]) for a in sample["arguments"]]
        theirs = [resp[0] for resp in sample["filtered_resps"]]
        np.testing.assert_allclose(scored["loglikelihoods"], theirs, atol=1e-4, rtol=0, err_msg=f"{task} {scored['id']}")
        assert scored["pred"] == int(np.argmax(theirs))
        assert float(scored["pred"] == scored["label"]) == sample["acc"]
        assert float(scored["pred_norm"] == scored["label"]) == sample["acc_norm"]
    assert ours["acc"] == pytest.approx(np.mean([s["acc"] for s in samples]))
    assert ours["acc_norm"] == pytest.approx(np.mean([s["acc_norm"] for s in samples]))


def test_commonsense_qa_matches_lm_eval_in_both_formats(reference):
    if "commonsense_qa" not in reference["data"]:
        pytest.skip(f"the real CommonsenseQA validation file is not at {CSQA_FILE}")
    results = run_ours(eval_commonsense_qa, reference, "commonsense_qa", "csqa.json")
    assert list(results) == ["mc", "cloze", "plain"]
    for fmt, task, lm_eval_task in [("mc", "commonsense_qa", "csqa_mc_local"), ("cloze", "commonsense_qa_cloze", "csqa_cloze_local")]:
        examples = load_examples(task, reference["data"]["commonsense_qa"])
        assert_matches_lm_eval(results[fmt], examples, reference["samples"][lm_eval_task], task)
    # some lettered prompts were longer than the model: both sides left-truncated them the same way
    enc = get_encoding()
    assert any(len(enc.encode(ex["context"] + " A")) > BLOCK_SIZE + 1 for ex in load_examples("commonsense_qa", reference["data"]["commonsense_qa"]))


def test_hellaswag_matches_lm_eval(reference):
    results = run_ours(eval_hellaswag, reference, "hellaswag", "hellaswag.json")
    examples = load_examples("hellaswag", reference["data"]["hellaswag"])
    assert_matches_lm_eval(results["hellaswag"], examples, reference["samples"]["hellaswag_local"], "hellaswag")


def test_hellaswag_preprocess_matches_lm_eval():
    from lm_eval.tasks.hellaswag.utils import preprocess
    texts = [row["ctx_a"] for row in HELLASWAG_ROWS] + [e for row in HELLASWAG_ROWS for e in row["endings"]]
    texts += ["a [title] b [step] c  d   e", "[header] x [title]", "   "]
    for text in texts:
        assert hellaswag_preprocess(text) == preprocess(text)


# -----------------------------------------------------------------------------
# scoring rules

def test_acc_norm_divides_by_the_length_of_the_choice_text():
    # -4 over 2 characters is worse than -6 over 6: acc and acc_norm pick different choices
    assert choose([-4.0, -6.0], ["ab", "abcdef"]) == (0, 1)
    assert choose([-3.0, -3.0, -5.0], ["x", "y", "zzzzz"]) == (0, 2)  # ties go to the first, as np.argmax


def test_model_input_keeps_the_last_block_size_tokens():
    context, continuation = list(range(20)), [20, 21]
    assert model_input(context, continuation, block_size=8) == list(range(13, 21))
    assert model_input([5], [6, 7], block_size=8) == [5, 6]  # short: everything but the last token
    with pytest.raises(ValueError, match="block_size"):
        model_input([1], list(range(9)), block_size=8)


def test_long_contexts_are_left_truncated_to_block_size():
    model = tiny_gpt(block_size=16)
    enc = get_encoding()
    context = "Question: " + "a long preamble that goes on and on " * 5 + "\nAnswer:"
    example = {"id": 0, "context": context, "choices": ["yes", "no way"], "label": 0}
    (scored,) = evaluate(model, [example])["examples"]
    for choice, loglikelihood in zip(example["choices"], scored["loglikelihoods"]):
        continuation = enc.encode(" " + choice)
        window = enc.encode(context + " " + choice)[-17:]  # the last block_size + 1 tokens
        with torch.no_grad():
            logprobs = F.log_softmax(model(torch.tensor([window[:-1]]))[0][0], dim=-1)
        expected = sum(logprobs[16 - len(continuation) + i, t].item() for i, t in enumerate(continuation))
        assert loglikelihood == pytest.approx(expected, abs=1e-4)


def test_batch_size_does_not_change_the_scores(tmp_path):
    model = tiny_gpt()
    examples = load_examples("commonsense_qa_cloze", write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS))
    one = evaluate(model, examples, batch_size=1)["examples"]
    padded = evaluate(model, examples, batch_size=3)["examples"]
    for a, b in zip(one, padded):
        np.testing.assert_allclose(a["loglikelihoods"], b["loglikelihoods"], atol=1e-5)


def test_evaluate_restores_training_mode(tmp_path):
    model = tiny_gpt().train()
    evaluate(model, load_examples("commonsense_qa", write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS)))
    assert model.training


# -----------------------------------------------------------------------------
# data

def test_original_release_schema_loads_the_same_as_hugging_face_schema(tmp_path):
    original = [{"answerKey": r["answerKey"], "id": r["id"],
                 "question": {"question_concept": r["question_concept"], "stem": r["question"],
                              "choices": [{"label": l, "text": t} for l, t in zip(r["choices"]["label"], r["choices"]["text"])]}}
                for r in CSQA_ROWS]
    hf_path, original_path = write_jsonl(tmp_path / "hf.jsonl", CSQA_ROWS), write_jsonl(tmp_path / "orig.jsonl", original)
    for task in ("commonsense_qa", "commonsense_qa_cloze"):
        assert load_examples(task, original_path) == load_examples(task, hf_path)


def test_commonsense_qa_prompts_are_lm_evals(tmp_path):
    data = write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS[2:])
    (mc,) = load_examples("commonsense_qa", data)
    assert mc["context"] == ("Question: A bird builds its nest where?\nA. sea\nB. tree\nC. desert\nD. kitchen sink\n"
                             "E. library of congress\nAnswer:")
    assert (mc["choices"], mc["label"]) == (["A", "B", "C", "D", "E"], 1)
    (cloze,) = load_examples("commonsense_qa_cloze", data)
    assert cloze["context"] == "Question: A bird builds its nest where?\nAnswer:"
    assert (cloze["choices"][1], cloze["label"]) == ("tree", 1)


def test_hellaswag_labels_may_be_strings_or_integers(tmp_path):
    as_int = write_jsonl(tmp_path / "int.jsonl", [dict(HELLASWAG_ROWS[0], label=2)])  # the original release's
    as_string = write_jsonl(tmp_path / "str.jsonl", HELLASWAG_ROWS[:1])  # Hugging Face's
    assert load_examples("hellaswag", as_int) == load_examples("hellaswag", as_string)


def test_limit_takes_the_first_questions(tmp_path):
    examples = load_examples("commonsense_qa", write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS), limit=2)
    assert [ex["id"] for ex in examples] == ["q1", "q2"]


# -----------------------------------------------------------------------------
# the command lines

@pytest.fixture
def checkpoint(tmp_path):
    """A ckpt.pt with the part of train.py's format that load_checkpoint reads."""
    model = tiny_gpt()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    return str(path)


def test_results_json_has_the_documented_fields(tmp_path, checkpoint):
    data, out = write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS), tmp_path / "out" / "results.json"
    assert eval_commonsense_qa.main([checkpoint, "--data", data, "--out", str(out), "--batch_size", "2"]) == 0
    results = json.loads(out.read_text())
    assert list(results) == ["mc", "cloze", "plain"]
    for fmt in ("mc", "cloze", "plain"):
        summary = results[fmt]
        assert {"acc", "acc_norm", "n", "seconds", "examples"} <= set(summary)
        assert summary["n"] == 3
        assert [ex["id"] for ex in summary["examples"]] == ["q1", "q2", "q3"]  # dataset order
        for ex in summary["examples"]:
            assert set(ex) == {"id", "loglikelihoods", "pred", "pred_norm", "label"}
            assert len(ex["loglikelihoods"]) == 5 and 0 <= ex["pred"] < 5 and 0 <= ex["pred_norm"] < 5
        assert [ex["label"] for ex in summary["examples"]] == [0, 0, 1]
    assert eval_commonsense_qa.main([checkpoint, "--data", data, "--format", "cloze", "--out", str(out)]) == 0
    assert list(json.loads(out.read_text())) == ["cloze"]


def test_hellaswag_cli_scores_a_checkpoint(tmp_path, checkpoint, capsys):
    data = write_jsonl(tmp_path / "hs.jsonl", HELLASWAG_ROWS)
    assert eval_hellaswag.main([checkpoint, "--data", data, "--limit", "4"]) == 0
    assert "hellaswag" in capsys.readouterr().out


def one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_a_missing_checkpoint_is_one_clear_line(tmp_path, capsys):
    data = write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS)
    assert eval_commonsense_qa.main([str(tmp_path / "nope.pt"), "--data", data]) == 1
    assert "does not exist" in one_error_line(capsys)


def test_a_file_that_is_not_a_checkpoint_is_one_clear_line(tmp_path, capsys):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint")
    data = write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS)
    assert eval_commonsense_qa.main([str(bogus), "--data", data]) == 1
    assert "not a checkpoint" in one_error_line(capsys)


@pytest.mark.parametrize("script, row", [
    (eval_commonsense_qa, {"id": "x", "question": "Why?", "answerKey": "A"}),
    (eval_commonsense_qa, {"id": "x", "question": {"stem": "Why?"}, "answerKey": "A"}),
    (eval_hellaswag, {k: v for k, v in HELLASWAG_ROWS[0].items() if k != "endings"}),
])
def test_a_row_without_choices_is_one_clear_line(tmp_path, checkpoint, capsys, script, row):
    data = write_jsonl(tmp_path / "bad.jsonl", [row])
    assert script.main([checkpoint, "--data", data]) == 1
    err = one_error_line(capsys)
    assert "row 1 has no choices" in err and "bad.jsonl" in err


def test_other_bad_inputs_are_one_clear_line(tmp_path, checkpoint, capsys):
    assert eval_commonsense_qa.main([checkpoint, "--data", str(tmp_path / "missing.jsonl")]) == 1
    assert "missing.jsonl does not exist" in one_error_line(capsys)
    assert eval_commonsense_qa.main(["--data", "x.jsonl"]) == 1  # neither a checkpoint nor --hf
    assert "--hf" in one_error_line(capsys)
    no_answer = write_jsonl(tmp_path / "test_split.jsonl", [dict(CSQA_ROWS[0], answerKey="")])
    assert eval_commonsense_qa.main([checkpoint, "--data", no_answer]) == 1
    assert "answerKey" in one_error_line(capsys)


# -----------------------------------------------------------------------------
# the plain format: golark/train_gpt's protocol, against a re-implementation of its commonsense.py

def test_plain_format_matches_train_gpts_protocol_on_the_real_questions():
    if not os.path.exists(CSQA_FILE):
        pytest.skip(f"the real CommonsenseQA validation file is not at {CSQA_FILE}")
    with open(CSQA_FILE) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 1221
    enc = get_encoding()
    # train_gpt tokenizes the stripped question and " " + choice apart; we (as lm-eval) tokenize them together
    # and split: the same tokens on every question, since GPT-2's pre-tokenizer splits before " word"
    for row in rows:
        for text in row["choices"]["text"]:
            context, whole = enc.encode(row["question"].strip()), enc.encode(row["question"].strip() + " " + text)
            assert whole == context + enc.encode(" " + text)
    model, n = tiny_gpt(block_size=128), 60
    ours = evaluate(model, load_examples("commonsense_qa_plain", CSQA_FILE, limit=n), batch_size=8)
    correct = 0
    for row, scored in zip(rows[:n], ours["examples"]):
        # the protocol, one choice at a time: log-probs of the choice's tokens after the question, summed; argmax
        context = enc.encode(row["question"].strip())
        loglikelihoods = []
        for text in row["choices"]["text"]:
            choice = enc.encode(" " + text)
            with torch.no_grad():
                logprobs = F.log_softmax(model(torch.tensor([context + choice]))[0][0], dim=-1)
            loglikelihoods.append(sum(logprobs[len(context) - 1 + j, token].item() for j, token in enumerate(choice)))
        np.testing.assert_allclose(scored["loglikelihoods"], loglikelihoods, atol=1e-4, rtol=0)
        correct += int(np.argmax(loglikelihoods)) == "ABCDE".index(row["answerKey"])
    assert ours["acc"] == correct / n


def test_plain_prompt_is_the_stripped_question(tmp_path):
    (plain,) = load_examples("commonsense_qa_plain", write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS[2:]))
    assert plain["context"] == "A bird builds its nest where?"  # no real question has spaces around it
    assert (plain["choices"][1], plain["label"]) == ("tree", 1)


def test_scores_are_float32_even_under_a_callers_bf16_autocast(tmp_path):
    # train.py scores its benchmarks inside its training code; lm-eval scores GPT-2 in float32
    model, examples = tiny_gpt(), load_examples("commonsense_qa_cloze", write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS))
    fp32 = evaluate(model, examples)["examples"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = evaluate(model, examples)["examples"]
    for a, b in zip(fp32, under_autocast):
        np.testing.assert_allclose(a["loglikelihoods"], b["loglikelihoods"], atol=1e-5, rtol=0)


def test_scores_use_full_float32_matmuls_even_after_train_py_set_tf32(tmp_path):
    # train.py sets "high" on a GPU (TF32: 10-bit mantissas in every float32 matmul); the benchmark scores
    # it logs at each evaluation must be the float32 ones eval_commonsense_qa.py gives afterwards
    model, examples = tiny_gpt(), load_examples("commonsense_qa_cloze", write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS))
    seen, forward = [], model.forward
    model.forward = lambda *args, **kwargs: seen.append(torch.get_float32_matmul_precision()) or forward(*args, **kwargs)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        evaluate(model, examples)
        assert seen and set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "high"  # the caller's setting comes back
    finally:
        torch.set_float32_matmul_precision(previous)


def test_an_unwritable_out_fails_before_any_evaluation(tmp_path, checkpoint, capsys, monkeypatch):
    from cheapgpt2 import multiple_choice
    monkeypatch.setattr(multiple_choice, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --out"))
    (tmp_path / "a_file").write_text("")
    data = write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS)
    assert eval_commonsense_qa.main([checkpoint, "--data", data, "--out", str(tmp_path / "a_file" / "r.json")]) == 1
    assert "cannot write --out" in one_error_line(capsys)


def test_results_survive_a_failing_final_write(tmp_path, checkpoint, capsys, monkeypatch):
    data, out = write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS), tmp_path / "results.json"

    def disk_full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", disk_full)  # the rename of the finished temporary file fails
    assert eval_commonsense_qa.main([checkpoint, "--data", data, "--format", "plain", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert err.startswith("error: ") and "No space left" in err and not out.exists()
    saved = err.split("saved in ")[1]
    assert json.loads(open(saved).read())["plain"]["n"] == 3
    os.remove(saved)


def test_a_damaged_hugging_face_directory_is_one_line_naming_the_file(tmp_path, capsys):
    import transformers
    data = write_jsonl(tmp_path / "csqa.jsonl", CSQA_ROWS)
    model_dir = tmp_path / "hf"
    transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, n_positions=16).save_pretrained(model_dir)
    (model_dir / "model.safetensors").write_bytes(b"\x00\x01 truncated download")
    assert eval_commonsense_qa.main(["--hf", str(model_dir), "--data", data]) == 1
    assert "model.safetensors" in one_error_line(capsys)
    (model_dir / "config.json").write_text('{"model_type": "gpt2", "n_layer": ')
    assert eval_commonsense_qa.main(["--hf", str(model_dir), "--data", data]) == 1
    assert "config.json" in one_error_line(capsys)
    (model_dir / "config.json").write_text('{"model_type": "gpt2"}')
    assert eval_commonsense_qa.main(["--hf", str(model_dir), "--data", data]) == 1
    assert "config.json has no integer n_positions" in one_error_line(capsys)


def test_a_binary_data_file_is_one_line_naming_it(tmp_path, checkpoint, capsys):
    binary = tmp_path / "csqa.parquet"
    binary.write_bytes(bytes(range(256)) * 8)
    assert eval_commonsense_qa.main([checkpoint, "--data", str(binary)]) == 1
    assert "csqa.parquet is not UTF-8 text" in one_error_line(capsys)


def test_hellaswag_help_mentions_no_formats(capsys):
    with pytest.raises(SystemExit):
        eval_hellaswag.main(["--help"])
    text = capsys.readouterr().out
    assert "format" not in text and "cloze" not in text and "--out" in text
