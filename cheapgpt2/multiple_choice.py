"""
Zero-shot multiple-choice evaluation by log-likelihood, scored exactly as lm-evaluation-harness scores it.

eval_commonsense_qa.py and eval_hellaswag.py are thin command lines over this file; train.py loads the
examples once and calls evaluate() every eval_interval steps:

    from cheapgpt2.multiple_choice import load_examples, evaluate
    examples = load_examples("commonsense_qa_cloze", data_path="../shared/data/commonsense_qa_validation.jsonl", limit=500)
    evaluate(model, examples, device="cuda")  # {"acc", "acc_norm", "n", "seconds", "examples": [...]}

Each task reproduces one of lm-eval's (checked against v0.4.13; its task yamls and its HFLM model class are the reference, and
tests/test_eval.py runs lm-eval itself on the same model and data):
- commonsense_qa        lm-eval's `commonsense_qa`: the question, the five options lettered A-E, "Answer:";
                        the model scores the letters. Small models sit near chance (20%) on it.
- commonsense_qa_cloze  "Question: ...\\nAnswer:" and each answer's text as the choice: the same task with the
                        choice texts as doc_to_choice, the format that separates small models.
- commonsense_qa_plain  the original train_gpt project's protocol (golark/train_gpt, train_gpt/commonsense.py): the
                        bare question (stripped) as the context and " " + each answer's text as the choice, the
                        sum of its log-probs, argmax (acc). GPT-2 124M: 28.26% (345/1221, its train_gpt/evaluate.ipynb).
- hellaswag             lm-eval's `hellaswag`: activity label and context, cleaned by its preprocess(), then
                        each of the four endings.

How a choice is scored (lm-eval's TemplateLM._encode_pair and HFLM._loglikelihood_tokens): the continuation
is " " + choice; context + continuation are tokenized as one string and split at the context's token count;
the choice's log-likelihood is the sum of its tokens' log-probabilities (log_softmax over the tokenizer's 50,257
tokens: model.py's head puts the padding rows at -inf, and a Hugging Face export holds just these rows). acc takes the argmax; acc_norm the argmax after dividing by the length of the choice's text
(lm-eval's len(choice): characters, the same as bytes for ASCII text). Inputs longer than block_size keep
their last tokens (left truncation).
"""

import argparse
import os
import re
import sys
import time
from contextlib import contextmanager

import torch
from tqdm import tqdm

from cheapgpt2.checkpoint import add_model_arguments, load_model, model_arguments_error
from cheapgpt2.common import check_writable, pick_device, write_json_atomic
from cheapgpt2.data import read_jsonl
from cheapgpt2.model import log_probs
from cheapgpt2.quantize import SCHEMES, quantize
from cheapgpt2.tokenizer import get_encoding

TARGET_DELIMITER = " "  # lm-eval's default target_delimiter, between the context and every choice
LETTERS = ["A", "B", "C", "D", "E"]  # lm-eval's commonsense_qa doc_to_choice

# -----------------------------------------------------------------------------
# data: rows of a local .jsonl or a Hugging Face dataset -> docs with one schema per dataset

CSQA_SCHEMAS = ("expected the Hugging Face schema (question, choices: {label, text}, answerKey) or the "
                "original release's (question: {stem, choices: [{label, text}]}, answerKey)")


def csqa_doc(row, where, row_number):
    """A CommonsenseQA row, Hugging Face or original-release schema, as {id, question, choices, label}."""
    question, choices = row.get("question"), row.get("choices")
    if isinstance(question, dict):  # original release: the choices are a list of {label, text} under the question
        question, choices = question.get("stem"), question.get("choices")
        if isinstance(choices, list) and all(isinstance(c, dict) for c in choices):
            choices = {"label": [c.get("label") for c in choices], "text": [c.get("text") for c in choices]}
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where} has no question; {CSQA_SCHEMAS}")
    if not isinstance(choices, dict) or not choices.get("text"):
        raise ValueError(f"{where} has no choices; {CSQA_SCHEMAS}")
    texts, labels = choices["text"], choices.get("label")
    if labels != LETTERS or len(texts) != 5 or not all(isinstance(t, str) and t for t in texts):
        raise ValueError(f"{where} does not have five non-empty choices labelled A-E, as every CommonsenseQA question has")
    if row.get("answerKey") not in LETTERS:
        raise ValueError(f"{where} has answerKey {row.get('answerKey')!r}, not one of A-E "
                         f"(the test split has no answers and cannot be scored)")
    return {"id": row.get("id", row_number), "question": question, "choices": texts,
            "label": LETTERS.index(row["answerKey"])}


def hellaswag_doc(row, where, row_number):
    """A HellaSwag row (Hugging Face's Rowan/hellaswag or the original release's jsonl) as the fields lm-eval reads."""
    for key in ("activity_label", "ctx_a", "ctx_b"):
        if not isinstance(row.get(key), str):
            raise ValueError(f"{where} has no {key}; expected HellaSwag's schema (activity_label, ctx_a, ctx_b, endings, label)")
    endings = row.get("endings")
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
        raise ValueError(f"{where} has no choices (endings); expected a list of HellaSwag's four endings")
    label = row.get("label")  # a string on Hugging Face, an int in the original release
    if not str(label).isdigit() or int(label) >= len(endings):
        raise ValueError(f"{where} has label {label!r}, not the index of one of its {len(endings)} endings "
                         f"(the test split has no labels and cannot be scored)")
    return {"id": row.get("ind", row_number), "activity_label": row["activity_label"], "ctx_a": row["ctx_a"],
            "ctx_b": row["ctx_b"], "endings": endings, "label": int(label)}


DATASETS = {
    # name: (Hugging Face id, split, row reader)
    "commonsense_qa": ("tau/commonsense_qa", "validation", csqa_doc),
    "hellaswag": ("Rowan/hellaswag", "validation", hellaswag_doc),
}


def read_rows(path):
    """The rows of a local .jsonl, one question per line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path} does not exist; pass a .jsonl with one question per line")
    rows = []
    try:
        for line_number, row in read_jsonl(path):
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {line_number} is not a JSON object; pass a .jsonl with one question per line")
            rows.append(row)
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text (a binary file?); pass a .jsonl with one question per line") from None
    return rows


def download_rows(hf_id, split):
    try:
        import datasets  # slow to import; only needed without --data
        return list(datasets.load_dataset(hf_id, split=split))
    except Exception as e:
        reason = " ".join(str(e).split())[:160]  # one line, whatever the library put in its message
        raise ValueError(f"could not load {hf_id} ({split}) from Hugging Face ({type(e).__name__}: {reason}); "
                         f"pass a local .jsonl instead (--data PATH)") from None


def load_docs(dataset, data_path=None, limit=None):
    """The first `limit` docs of a dataset, from data_path (.jsonl) or else downloaded from Hugging Face."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; one of {sorted(DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of questions, got {limit}")
    hf_id, split, read_row = DATASETS[dataset]
    source = data_path or f"{hf_id} ({split})"
    rows = read_rows(data_path) if data_path else download_rows(hf_id, split)
    rows = rows[:limit]
    if not rows:
        raise ValueError(f"{source} has no questions")
    return [read_row(row, f"{source} row {n}", n) for n, row in enumerate(rows, 1)]


# -----------------------------------------------------------------------------
# prompts: doc -> example {id, context, choices, label}, one function per lm-eval task

def csqa_mc_example(doc):
    # lm-eval tasks/commonsense_qa/default.yaml: doc_to_text, with the letters as doc_to_choice
    options = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, doc["choices"]))
    return {"id": doc["id"], "context": f"Question: {doc['question'].strip()}{options}\nAnswer:",
            "choices": list(LETTERS), "label": doc["label"]}


def csqa_cloze_example(doc):
    return {"id": doc["id"], "context": f"Question: {doc['question'].strip()}\nAnswer:",
            "choices": list(doc["choices"]), "label": doc["label"]}


def csqa_plain_example(doc):
    # golark/train_gpt's commonsense.py: context question.strip(), choice " " + text (our TARGET_DELIMITER)
    return {"id": doc["id"], "context": doc["question"].strip(), "choices": list(doc["choices"]), "label": doc["label"]}


def hellaswag_preprocess(text):
    """lm-eval's tasks/hellaswag/utils.py preprocess(): removes the WikiHow part's markup ([title], [header],
    [step], ...) and collapses double spaces once (not repeatedly: the same text, not a cleaner one)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_example(doc):
    # lm-eval's process_docs; str.capitalize() also lowercases the rest of ctx_b, kept for the same prompts
    context = hellaswag_preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())
    return {"id": doc["id"], "context": context, "choices": [hellaswag_preprocess(e) for e in doc["endings"]],
            "label": doc["label"]}


TASKS = {
    # task name (lm-eval's, where it has one): (dataset, doc -> example)
    "commonsense_qa": ("commonsense_qa", csqa_mc_example),
    "commonsense_qa_cloze": ("commonsense_qa", csqa_cloze_example),
    "commonsense_qa_plain": ("commonsense_qa", csqa_plain_example),
    "hellaswag": ("hellaswag", hellaswag_example),
}

# eval_commonsense_qa.py's --format names and train.py's csqa_format: the CommonsenseQA task of each
CSQA_FORMATS = {"mc": "commonsense_qa", "cloze": "commonsense_qa_cloze", "plain": "commonsense_qa_plain"}


def load_examples(task, data_path=None, limit=None):
    """The examples of one task (a key of TASKS), from data_path (.jsonl) or else from Hugging Face."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {sorted(TASKS)}")
    dataset, to_example = TASKS[task]
    return [to_example(doc) for doc in load_docs(dataset, data_path, limit)]


# -----------------------------------------------------------------------------
# scoring

def encode_pair(enc, context, continuation):
    """(context tokens, continuation tokens), as lm-eval's _encode_pair: trailing spaces of the context move
    to the continuation, and the whole string is tokenized at once so BPE merges as it would in running text."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    # allowed_special: "<|endoftext|>" in the text is the special token, as in Hugging Face's tokenizer
    whole = enc.encode(context + continuation, allowed_special="all")
    context_tokens = enc.encode(context, allowed_special="all")
    return context_tokens, whole[len(context_tokens):]


def model_input(context_tokens, continuation_tokens, block_size):
    """The tokens fed to the model for one choice: as lm-eval's HFLM, the last block_size + 1 tokens of
    context + continuation without the very last (only ever a target). Its last len(continuation_tokens)
    positions predict the continuation."""
    if len(continuation_tokens) > block_size:
        raise ValueError(f"a choice is {len(continuation_tokens)} tokens, longer than the model's block_size={block_size}")
    return (context_tokens + continuation_tokens)[-(block_size + 1):][:-1]


def choose(loglikelihoods, choices):
    """(pred, pred_norm): the most likely choice, and the most likely per character of the choice's text
    (lm-eval's acc_norm divides by len(choice), the text without the delimiter: characters, which are bytes
    for ASCII). Ties go to the first, as numpy's argmax."""
    # an empty choice scores -inf: what numpy gives lm-eval for a negative log-likelihood divided by zero
    normalized = [ll / len(c) if c else float("-inf") for ll, c in zip(loglikelihoods, choices)]
    pred = max(range(len(loglikelihoods)), key=lambda i: loglikelihoods[i])
    pred_norm = max(range(len(normalized)), key=lambda i: normalized[i])
    return pred, pred_norm


@contextmanager
def full_float32_matmuls():
    """float32 matmuls at full precision inside, whatever the caller set: train.py's "high" (TF32 on a GPU, 10-bit
    mantissas) would make the scores during training differ from the float32 ones of eval_commonsense_qa.py."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


@torch.no_grad()
def score_batch(model, batch, device):
    """Log-likelihood of every choice of a batch of questions, in one forward pass.
    batch: a list of (context tokens, [continuation tokens of each choice]); returns a list of lists of floats."""
    block_size = model.config.block_size
    inputs, continuations = [], []
    for context_tokens, choice_tokens in batch:
        for continuation_tokens in choice_tokens:
            inputs.append(model_input(context_tokens, continuation_tokens, block_size))
            continuations.append(continuation_tokens)
    # right padding: under causal attention it never reaches the positions we read
    idx = torch.zeros((len(inputs), max(len(x) for x in inputs)), dtype=torch.long)
    for row, tokens in enumerate(inputs):
        idx[row, :len(tokens)] = torch.tensor(tokens)
    # float32 throughout, as lm-eval scores GPT-2: no autocast, even when the caller (train.py) runs under one;
    # bf16 logits move log-likelihoods by ~1e-2 and flip close choices
    with torch.autocast(device_type=device.type, enabled=False), full_float32_matmuls():
        logits, _ = model(idx.to(device))  # (rows, T, vocab_size)
    # for every continuation token: its row, the position that predicts it, and the token itself
    rows = torch.tensor([row for row, c in enumerate(continuations) for _ in c], device=device)
    positions = torch.tensor([p for x, c in zip(inputs, continuations) for p in range(len(x) - len(c), len(x))], device=device)
    targets = torch.tensor([t for c in continuations for t in c], device=device)
    # over the tokenizer's tokens (the head's padding rows are -inf): as lm-eval scores an export_hf.py model
    logprobs = log_probs(logits[rows, positions])  # (continuation tokens, vocab_size)
    token_ll = logprobs.gather(1, targets[:, None]).squeeze(1)
    choice_ll = torch.zeros(len(inputs), device=device).index_add_(0, rows, token_ll).tolist()
    out, start = [], 0
    for _, choice_tokens in batch:
        out.append(choice_ll[start:start + len(choice_tokens)])
        start += len(choice_tokens)
    return out


def evaluate(model, examples, device="cpu", batch_size=16, progress=False):
    """Score examples (from load_examples) with a GPT: {"acc", "acc_norm", "n", "seconds", "examples"},
    examples in input order with id, loglikelihoods (one per choice), pred, pred_norm, label (choice indices).
    The model runs in eval mode and is put back in its previous mode."""
    if not examples:
        raise ValueError("no examples to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of questions, got {batch_size}")
    enc = get_encoding()
    device = torch.device(device)
    was_training = model.training
    model.eval()
    t0 = time.time()
    scored = []
    bar = tqdm(total=len(examples), unit="question", disable=not progress)
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = []
            for ex in chunk:
                pairs = [encode_pair(enc, ex["context"], TARGET_DELIMITER + choice) for choice in ex["choices"]]
                batch.append((pairs[0][0], [continuation for _, continuation in pairs]))
            for ex, loglikelihoods in zip(chunk, score_batch(model, batch, device)):
                pred, pred_norm = choose(loglikelihoods, ex["choices"])
                scored.append({"id": ex["id"], "loglikelihoods": loglikelihoods, "pred": pred,
                               "pred_norm": pred_norm, "label": ex["label"]})
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    n = len(scored)
    return {"acc": sum(s["pred"] == s["label"] for s in scored) / n,
            "acc_norm": sum(s["pred_norm"] == s["label"] for s in scored) / n,
            "n": n, "seconds": time.time() - t0, "examples": scored}


# -----------------------------------------------------------------------------
# the same tasks for lm-evaluation-harness, on local files (eval_lm.py, measure/bench_eval_served.py)

def write_local_tasks(folder, data):
    """Task yamls in folder that include lm-eval's own commonsense_qa and hellaswag yamls and only point them at the
    local files in data ({"hellaswag": path, "commonsense_qa": path}, either or both); returns the task names:
    hellaswag_local with HellaSwag, and csqa_mc_local and csqa_cloze_local (the answer texts as the choices) with
    CommonsenseQA."""
    import lm_eval
    shipped = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    local = "\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    validation: {data}\ntraining_split: null\n"
    both_metrics = "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"  # lm-eval's csqa reports acc only
    yamls = {}
    if "hellaswag" in data:
        yamls["hellaswag_local"] = f"include: {shipped}/hellaswag/hellaswag.yaml\ntask: hellaswag_local" + local.format(data=data["hellaswag"])
    if "commonsense_qa" in data:
        csqa = f"include: {shipped}/commonsense_qa/default.yaml" + local.format(data=data["commonsense_qa"]) + both_metrics
        yamls["csqa_mc_local"] = csqa + "task: csqa_mc_local\n"
        # the cloze format: the same task with the answer texts as the choices
        yamls["csqa_cloze_local"] = csqa + ("task: csqa_cloze_local\ndoc_to_text: \"Question: {{ question.strip() }}\\nAnswer:\"\n"
                                            "doc_to_choice: \"{{ choices.text }}\"\ndoc_to_target: \"{{ choices.label.index(answerKey) }}\"\n")
    os.makedirs(folder, exist_ok=True)
    for name, text in yamls.items():
        with open(os.path.join(folder, f"{name}.yaml"), "w") as f:
            f.write(text)
    return sorted(yamls)


# -----------------------------------------------------------------------------
# the command line shared by eval_commonsense_qa.py and eval_hellaswag.py

def run_cli(argv, dataset, formats, doc):
    """The CLI of one dataset; formats maps each --format name to its task in TASKS (one: no --format flag)."""
    hf_id, split, _ = DATASETS[dataset]
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, "score")
    parser.add_argument("--data", metavar="PATH", help=f"a local .jsonl instead of downloading {hf_id} ({split})")
    parser.add_argument("--limit", type=int, metavar="N", help="score only the first N questions, for a quick run")
    if len(formats) > 1:
        parser.add_argument("--format", choices=[*formats, "all"], default="all",
                            help=f"which prompt format to score, as described above: {', '.join(formats)}; all (default): each in turn")
    parser.add_argument("--batch_size", type=int, default=16, help="questions per forward pass; all choices of a question go into the same one (default 16)")
    parser.add_argument("--device", default="auto", help="cuda, cpu, mps, ...; auto (default): cuda when available, else cpu")
    parser.add_argument("--out", metavar="PATH", help="write a .json: the summary (acc, acc_norm, n) and every question's log-likelihoods, "
                        "prediction and label" + (", for each format" if len(formats) > 1 else ""))
    parser.add_argument("--quant", default="none", metavar="SCHEME", help=f"score the model quantized by quantize.py (CPU): {', '.join(SCHEMES)} (default none)")
    args = parser.parse_args(argv)
    chosen = list(formats) if getattr(args, "format", "all") == "all" else [args.format]

    if error := model_arguments_error(args):
        print(f"error: {error}", file=sys.stderr)
        return 1
    model_name = args.hf if args.hf is not None else args.checkpoint
    data_name = args.data or f"{hf_id} ({split})"
    results = {}
    try:
        if args.out:
            check_writable(args.out)
        device = pick_device(args.device)
        if args.quant != "none" and device != "cpu":
            raise ValueError(f"--quant {args.quant} runs on the CPU: pass --device cpu")
        model = quantize(load_model(args.checkpoint, args.hf, device), args.quant)
        docs = load_docs(dataset, args.data, args.limit)
        for fmt in chosen:
            task = formats[fmt]
            examples = [TASKS[task][1](d) for d in docs]
            print(f"{task}: {len(examples)} questions of {data_name}, {model_name} on {device}")
            scores = evaluate(model, examples, device, args.batch_size, progress=True)
            results[fmt] = {"task": task, "model": model_name, "data": data_name, **scores}
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    print(f"{'format':<10}{'acc':>8}{'acc_norm':>10}{'n':>7}{'seconds':>9}")
    for fmt, r in results.items():
        print(f"{fmt:<10}{r['acc']:>8.4f}{r['acc_norm']:>10.4f}{r['n']:>7}{r['seconds']:>9.1f}")
    if args.out:
        try:
            print(f"wrote {write_json_atomic(results, args.out)}")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0
