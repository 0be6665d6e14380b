"""
CommonsenseQA scored three ways on one checkpoint, timed: in process (eval_lm.py), and through c/gpt-server by
lm-evaluation-harness's own client (lm_eval --model local-completions), with the server's prompt cache and without
it (--no_prompt_cache), and the q8_0 export with the cache. Both formats (cloze: the answer texts as choices; mc: the letters), the whole validation split.
Beside each served row: the largest difference of a choice's log-likelihood from in process, and the questions whose
answer differs (both read from the per-question samples that eval_lm.py and lm_eval --log_samples write).

    make bench_eval_served                                    # make demo's checkpoint -> media/bench_eval_served.md
    python -m measure.bench_eval_served out/demo_cpu/ckpt.pt --data ../shared/data/commonsense_qa_validation.jsonl
    python -m measure.bench_eval_served CKPT --data FILE --limit 50   # a partial run -> out/bench_eval_served.md

The questions come from --data (a .jsonl of Hugging Face's tau/commonsense_qa schema), read through task yamls that
include lm-eval's own commonsense_qa (eval_lm.write_local_tasks). Each command runs as a user types it, in its own
process, one after another; its wall time is reported with the accuracies it printed. The server runs on
127.0.0.1 with 2 threads and its defaults otherwise; lm-eval sends batches of 16 token-id prompts with echo and
logprobs (docs/evaluation.md says why each of its arguments).

Only a whole run (no --limit) on the default checkpoint writes media/bench_eval_served.md, which docs/evaluation.md
cites; any other goes to out/bench_eval_served.md unless --out names the file.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from cheapgpt2.common import REPO, hardware, write_atomically
from cheapgpt2.multiple_choice import write_local_tasks
DEFAULT_CKPT = os.path.join("out", "demo_cpu", "ckpt.pt")
COMMITTED_TABLE = os.path.join(REPO, "media", "bench_eval_served.md")
PARTIAL_TABLE = os.path.join(REPO, "out", "bench_eval_served.md")
TASKS = "csqa_cloze_local,csqa_mc_local"


def timed(cmd, log):
    """Seconds of a command run to its end; its output into log. ValueError when it fails."""
    start = time.perf_counter()
    result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    if result.returncode != 0:
        raise ValueError(f"{' '.join(cmd[:3])} ... failed (exit {result.returncode}): see {log.name}")
    return time.perf_counter() - start


def accuracies(results_path):
    """{"cloze": acc, "mc": acc} from an lm-eval results JSON (eval_lm.py's or lm_eval's --output_path)."""
    if os.path.isdir(results_path):  # lm_eval writes DIR/<model>/results_<time>.json
        found = [os.path.join(d, f) for d, _, files in os.walk(results_path) for f in files if f.startswith("results")]
        results_path = max(found, key=os.path.getmtime)
    with open(results_path) as f:
        results = json.load(f)["results"]
    return {"cloze": results["csqa_cloze_local"]["acc,none"], "mc": results["csqa_mc_local"]["acc,none"]}


def loglikelihoods(results_path):
    """{(format, question index): [log-likelihood of each choice]} from eval_lm.py's results JSON (its "samples") or
    from the per-task samples_<task>_<time>.jsonl files that lm_eval --log_samples writes under its --output_path."""
    formats = {"csqa_cloze_local": "cloze", "csqa_mc_local": "mc"}
    samples = {}
    if os.path.isdir(results_path):
        for folder, _, files in os.walk(results_path):
            for name in files:
                task = name[len("samples_"):].rsplit("_", 1)[0] if name.startswith("samples_") else None
                if task in formats:
                    with open(os.path.join(folder, name)) as f:
                        samples[task] = [json.loads(line) for line in f if line.strip()]
    else:
        with open(results_path) as f:
            samples = json.load(f)["samples"]
    # lm_eval writes each number as str(float), which reads back exactly
    return {(formats[task], s["doc_id"]): [float(resp[0]) for resp in s["filtered_resps"]]
            for task, rows in samples.items() if task in formats for s in rows}


def differences(served, in_process):
    """{format: (the largest |served - in process| of a choice's log-likelihood, questions whose answer differs,
    questions)} over the questions both scored."""
    out = {}
    for fmt in ("cloze", "mc"):
        keys = [key for key in in_process if key[0] == fmt and key in served]
        largest = max((abs(a - b) for key in keys for a, b in zip(served[key], in_process[key])), default=0.0)
        answers = sum(max(range(len(in_process[k])), key=in_process[k].__getitem__) !=
                      max(range(len(served[k])), key=served[k].__getitem__) for k in keys)
        out[fmt] = (largest, answers, len(keys))
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(model_path, args, cache, out_dir, log, name="fp32"):
    """(seconds, accuracies, loglikelihoods) of lm_eval's local-completions through a c/gpt-server of its own."""
    port = free_port()
    cmd = [args.server, model_path, "--port", str(port), "--threads", str(args.threads)] + ([] if cache else ["--no_prompt_cache"])
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise ValueError(f"{args.server} did not start (see {log.name})")
                time.sleep(0.2)
        results = os.path.join(out_dir, f"served_{name}_{'cache' if cache else 'nocache'}")
        model_args = (f"base_url=http://127.0.0.1:{port}/v1/completions,model=davinci,tokenizer_backend=tiktoken,"
                      f"tokenized_requests=True,max_length={args.max_length}")
        lm_eval = [os.path.join(os.path.dirname(sys.executable), "lm_eval"), "--model", "local-completions",
                   "--tasks", TASKS, "--include_path", args.tasks_dir, "--batch_size", "16", "--model_args", model_args,
                   "--output_path", results, "--log_samples"] + (["--limit", str(args.limit)] if args.limit else [])
        seconds = timed(lm_eval, log)
        return seconds, accuracies(results), loglikelihoods(results)
    finally:
        server.terminate()
        server.wait(timeout=30)


def markdown(rows, args):
    lines = [f"`python -m measure.bench_eval_served {args.checkpoint} --data {os.path.basename(args.data)}"
             f"{f' --limit {args.limit}' if args.limit else ''}` on {hardware()}, {time.strftime('%Y-%m-%d')}: "
             f"CommonsenseQA's validation split{f' (first {args.limit} questions)' if args.limit else ''}, both formats, "
             f"one run each, one after another; c/gpt-server with {args.threads} threads, lm-eval's local-completions "
             "with batches of 16; fp32 but where a row says q8_0. Largest difference: of a choice's log-likelihood from in "
             "process; answers changed: questions whose argmax differs from in process.", "",
             "| how | time s | cloze acc | mc acc | largest difference cloze, mc | answers changed cloze, mc | "
             "time / in process |", "|---|---:|---:|---:|---:|---:|---:|"]
    first, reference = rows[0][1], rows[0][3]
    for i, (how, seconds, acc, lls) in enumerate(rows):
        largest = answers = "—"
        if i:
            diff = differences(lls, reference)
            largest = ", ".join(f"{diff[fmt][0]:.1e}" for fmt in ("cloze", "mc"))
            answers = ", ".join(f"{diff[fmt][1]} of {diff[fmt][2]:,}" for fmt in ("cloze", "mc"))
        lines.append(f"| {how} | {seconds:,.1f} | {acc['cloze']:.2%} | {acc['mc']:.2%} | {largest} | {answers} | "
                     f"{seconds / first:.2f}x |")
    cached = next(row[1] for row in rows if "with its prompt cache" in row[0])
    uncached = next(row[1] for row in rows if "without" in row[0])
    lines += ["", f"Served without the prompt cache / with it: {uncached / cached:.2f}x (issue 34's target: at least 1.5x)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=DEFAULT_CKPT, help=f"a ckpt.pt (default {DEFAULT_CKPT})")
    parser.add_argument("--data", required=True, help="CommonsenseQA's validation split as .jsonl (tau/commonsense_qa's schema)")
    parser.add_argument("--limit", type=int, default=0, help="the first N questions only (a partial run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--server", default=os.path.join(REPO, "c", "gpt-server"), help="c/gpt-server (make c)")
    parser.add_argument("--out", help="the table's file (default: media/bench_eval_served.md from a whole run of the "
                                      "default checkpoint, else out/bench_eval_served.md)")
    args = parser.parse_args(argv)
    whole = not args.limit and args.checkpoint == DEFAULT_CKPT
    args.out = args.out or (COMMITTED_TABLE if whole else PARTIAL_TABLE)
    try:
        for path, what in ((args.checkpoint, "the checkpoint (make demo)"), (args.data, "--data"), (args.server, "make c")):
            if not os.path.exists(path):
                raise ValueError(f"{path} not found: {what}")
        import torch
        block_size = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["model_config"]["block_size"]
        args.max_length = block_size  # lm-eval keeps one position for a generated token; the server takes the context
        with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "log.txt"), "w") as log:
            args.tasks_dir = os.path.join(tmp, "tasks")
            write_local_tasks(args.tasks_dir, {"commonsense_qa": os.path.abspath(args.data)})
            model_path, q8_0_path = os.path.join(tmp, "model.bin"), os.path.join(tmp, "model_q8_0.bin")
            timed([sys.executable, "export.py", args.checkpoint, model_path], log)
            timed([sys.executable, "export.py", args.checkpoint, q8_0_path, "--dtype", "q8_0"], log)
            in_process = os.path.join(tmp, "in_process.json")
            print("in process (eval_lm.py) ...", flush=True)
            seconds = timed([sys.executable, "eval_lm.py", args.checkpoint, "--tasks", TASKS, "--include_path",
                             args.tasks_dir, "--device", "cpu", "--batch_size", "16", "--out", in_process]
                            + (["--limit", str(args.limit)] if args.limit else []), log)
            rows = [("`eval_lm.py` in process", seconds, accuracies(in_process), loglikelihoods(in_process))]
            for cache in (True, False):
                print(f"served, prompt cache {'on' if cache else 'off'} (lm_eval --model local-completions) ...", flush=True)
                rows.append((f"`lm_eval --model local-completions` through c/gpt-server, "
                             f"{'with its prompt cache' if cache else 'without it (--no_prompt_cache)'}",
                             *served(model_path, args, cache, tmp, log)))
            print("served q8_0, prompt cache on (lm_eval --model local-completions) ...", flush=True)
            rows.append(("the same with its prompt cache, on `export.py --dtype q8_0`'s file",
                         *served(q8_0_path, args, True, tmp, log, name="q8_0")))
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = markdown(rows, args)
    print(table)
    write_atomically(args.out, table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
