"""train.py on a tiny model and a synthetic corpus: config loading, schedule, resume, SIGTERM, DDP (compile: test_compile.py)."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest

import train
from cheapgpt2 import training
from cheapgpt2.checkpoint import load_checkpoint
from cheapgpt2.config import TrainConfig, load_config
from cheapgpt2.estimate import flops_per_token

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--block_size=16", "--n_layer=2", "--n_head=2", "--n_embd=16", "--batch_size=4", "--total_batch_size=128",
        "--warmup_steps=2", "--max_lr=1e-2", "--eval_tokens=128", "--eval_interval=4", "--log_interval=1",
        "--device=cpu", "--dtype=float32", "--compile=False", "--sample_tokens=0", "--csqa_data=", "--hellaswag_data="]


def run(corpus, out_dir, *overrides):
    return train.main([f"--data_dir={corpus}", f"--out_dir={out_dir}", *TINY, *overrides])


def read_log(out_dir):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def train_losses(out_dir):
    return {r["step"]: r["train_loss"] for r in read_log(out_dir) if "train_loss" in r}


def test_loss_falls_on_a_fixture_corpus(corpus, tmp_path):
    assert run(corpus, tmp_path, "--max_steps=24") == 0
    records = read_log(tmp_path)
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert val[0] > math.log(1000)  # untrained: about uniform over the vocabulary
    assert val[-1] < val[0] - 3.0
    assert {"step", "tokens", "train_loss", "lr", "tok_per_s"} <= records[1].keys()
    assert records[-1]["tokens"] == 24 * 128
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["max_steps"] == 24 and saved["n_embd"] == 16


def test_resumed_run_logs_the_same_losses(corpus, tmp_path, monkeypatch):
    assert run(corpus, tmp_path / "straight", "--max_steps=12") == 0

    learning_rate = train.learning_rate

    def preempt_at_step_5(step, cfg):  # a spot instance's SIGTERM arrives during step 5
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return learning_rate(step, cfg)

    monkeypatch.setattr(train, "learning_rate", preempt_at_step_5)
    assert run(corpus, tmp_path / "resumed", "--max_steps=12") == 128 + signal.SIGTERM  # stopped early: not 0
    assert max(train_losses(tmp_path / "resumed")) == 6  # finished step 5, then stopped
    monkeypatch.setattr(train, "learning_rate", learning_rate)
    assert run(corpus, tmp_path / "resumed", "--max_steps=12") == 0

    straight, resumed = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight]  # no step logged twice
    for a, b in zip(straight, resumed):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert abs(a[key] - b[key]) < 1e-6, (a["step"], key)


def test_sigterm_writes_a_checkpoint_holding_everything_a_resume_needs(corpus, tmp_path, monkeypatch, capsys):
    learning_rate = train.learning_rate
    monkeypatch.setattr(train, "learning_rate",
                        lambda step, cfg: (os.kill(os.getpid(), signal.SIGTERM), learning_rate(step, cfg))[1])
    assert run(corpus, tmp_path, "--max_steps=50") == 143
    assert "run the same command to resume" in capsys.readouterr().out
    model, checkpoint = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert {"model", "model_config", "train_config", "optimizer", "step", "tokens", "train_loader", "rng"} <= checkpoint.keys()
    assert {"python", "numpy", "torch", "cuda"} <= checkpoint["rng"].keys()
    assert checkpoint["rng"]["cuda"] is None  # a CPU run; on CUDA the state of its own device only
    assert checkpoint["step"] == 1 and checkpoint["tokens"] == 128
    assert checkpoint["train_loader"]["position"] == 128
    assert checkpoint["train_config"]["max_steps"] == 50
    assert not os.path.exists(tmp_path / "ckpt.pt.tmp")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored for the caller


def test_resuming_with_another_model_or_optimizer_names_what_differs(corpus, tmp_path, capsys):
    assert run(corpus, tmp_path, "--max_steps=2") == 0
    config_before = (tmp_path / "config.json").read_bytes()
    assert run(corpus, tmp_path, "--max_steps=4", "--pos_emb=rope", "--n_layer=3", "--optimizer=muon") == 1
    assert (tmp_path / "config.json").read_bytes() == config_before  # the refused settings never reach it
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert "n_layer (checkpoint 2, config 3)" in err and "pos_emb" in err and "optimizer (checkpoint 'adamw'" in err


@pytest.mark.parametrize("argv,message", [
    (["--max_lrr=1e-3"], "did you mean 'max_lr'"),
    (["--max_steps=ten"], "--max_steps takes a int"),
    (["--compile=maybe"], "--compile takes True or False"),
    (["--lr_schedule=linear"], "lr_schedule must be one of"),
    (["--n_embd=30"], "divisible by n_head"),
    (["--max_steps", "10"], "overrides are written --key=value"),
    (["configs/does_not_exist.py"], "does not exist"),
])
def test_bad_configs_fail_with_one_clear_line(argv, message, capsys):
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_config_file_is_checked_key_by_key(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text('# a comment\nmax_lr = 3\npos_emb = "rope"\ncompile = False\n')
    cfg = load_config(str(path), ["--max_steps=7", "--compile=True"])
    assert (cfg.max_lr, type(cfg.max_lr), cfg.pos_emb, cfg.max_steps, cfg.compile) == (3.0, float, "rope", 7, True)
    for text, message in [("max_steps = 1e3\n", "max_steps must be a int"), ("compile = 1\n", "compile must be a bool"),
                          ("max_lr = 6e-4 * 3\n", "must be a literal"), ("import os\n", "only `key = value`"),
                          ("maxsteps = 3\n", "unknown config key 'maxsteps'")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_config(str(path))


def test_every_shipped_config_loads():
    for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
        load_config(os.path.join(REPO, "configs", name))


def test_learning_rate_schedules_at_every_step():
    cosine = TrainConfig(max_lr=1.0, min_lr_ratio=0.1, warmup_steps=2, max_steps=6)
    # warmup 0.5, 1; then cosine over steps 2..6 reaching 0.1 at step 6, just after the last step (5)
    expected = [0.5, 1.0] + [0.1 + 0.45 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [training.learning_rate(s, cosine) for s in range(6)] == pytest.approx(expected)
    assert training.learning_rate(6, cosine) == pytest.approx(0.1)
    wsd = TrainConfig(max_lr=1.0, min_lr_ratio=0.0, warmup_steps=1, max_steps=8, lr_schedule="wsd",
                            wsd_decay_fraction=0.5)
    # warmup 1 step, stable to step 3, then linear decay over steps 4..7: the last step still learns at 1/4
    assert [training.learning_rate(s, wsd) for s in range(8)] == pytest.approx([1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    assert training.learning_rate(8, wsd) == 0.0
    assert all(training.learning_rate(s, wsd) > 0 for s in range(8))  # no step is wasted at learning rate 0


def write_csqa(path, n):
    """n CommonsenseQA-shaped questions, answers spread over A-E."""
    rows = [{"id": f"q{i}", "question": f"Which word comes {i}?", "answerKey": "ABCDE"[i % 5],
             "choices": {"label": list("ABCDE"), "text": ["alpha", "beta", "gamma", "delta", "epsilon"]}}
            for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_two_gloo_processes_match_one_process_and_their_checkpoint_resumes_in_one(corpus, tmp_path):
    # one process: micro-batches of 4 sequences, 2 accumulated; two processes: 4 sequences each, averaged by DDP;
    # the benchmark at each eval is scored half by each rank, and must come out as one process scores it all
    csqa = write_csqa(tmp_path / "csqa.jsonl", 20)
    common = [f"--data_dir={corpus}", *TINY, "--total_batch_size=128", "--batch_size=4", "--max_steps=6",
              f"--csqa_data={csqa}", "--eval_interval=3"]
    assert train.main(common + [f"--out_dir={tmp_path / 'single'}"]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(torchrun + ["train.py"] + common + [f"--out_dir={tmp_path / 'ddp'}", "--max_steps=3"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # the 2-process checkpoint resumes in one process (another world size) and goes on with the same losses
    assert train.main(common + [f"--out_dir={tmp_path / 'ddp'}", "--max_steps=6"]) == 0
    single, ddp = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp")
    assert single.keys() == ddp.keys()
    # identical on this machine (measured difference 0.0); 1e-5 leaves room for gloo summing the two ranks'
    # float32 gradients in another order than accumulation does, far below the ~0.2 loss change per step here
    for step in single:
        assert abs(single[step] - ddp[step]) < 1e-5, step
    accuracy = {name: [r["csqa_acc"] for r in read_log(tmp_path / name) if "csqa_acc" in r] for name in ("single", "ddp")}
    assert len(accuracy["ddp"]) == 3 and accuracy["ddp"] == accuracy["single"]


def test_eval_records_carry_the_commonsense_qa_accuracy_of_the_model_at_that_step(corpus, tmp_path):
    from cheapgpt2.multiple_choice import evaluate, load_examples
    data = write_csqa(tmp_path / "csqa.jsonl", 7)
    assert run(corpus, tmp_path / "run", "--max_steps=4", f"--csqa_data={data}", "--eval_limit=5") == 0
    evals = [r for r in read_log(tmp_path / "run") if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 4] and all("csqa_acc" in r for r in evals)
    model, _ = load_checkpoint(str(tmp_path / "run" / "ckpt.pt"))
    expected = evaluate(model, load_examples("commonsense_qa_plain", str(data), limit=5), "cpu")  # csqa_format's default
    assert expected["n"] == 5 and evals[-1]["csqa_acc"] == expected["acc"]


def test_missing_benchmark_data_is_one_line(corpus, tmp_path, capsys):
    assert run(corpus, tmp_path, "--max_steps=1", f"--csqa_data={tmp_path / 'nope.jsonl'}") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.jsonl" in err and err.count("\n") == 1


def test_a_finished_run_rerun_with_fewer_steps_stops_at_once(corpus, tmp_path):
    assert run(corpus, tmp_path, "--max_steps=3") == 0
    assert run(corpus, tmp_path, "--max_steps=2") == 0  # used to train on forever past max_steps
    assert max(train_losses(tmp_path)) == 3


def test_a_damaged_checkpoint_in_out_dir_is_one_clear_line(corpus, tmp_path, capsys):
    (tmp_path / "ckpt.pt").write_bytes(b"half a checkpoint")  # e.g. copied while still being written
    assert run(corpus, tmp_path, "--max_steps=1") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "ckpt.pt is not a checkpoint torch can read" in err and err.count("\n") == 1


def test_the_first_step_compile_time_stays_out_of_throughput_but_in_the_cost(corpus, tmp_path, monkeypatch):
    """A process's first step compiles the graph (a minute on a GPU): counting it would understate tok_per_s, mfu
    and train_seconds at the first log line; elapsed_seconds and dollars, what the run costs, must keep it."""
    train_step, calls = train.train_step, []

    def slow_first_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            import time
            time.sleep(2.0)  # as compiling would
        return train_step(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", slow_first_step)
    assert run(corpus, tmp_path, "--max_steps=4", "--log_interval=2", "--eval_interval=100") == 0
    first = [r for r in read_log(tmp_path) if "train_loss" in r][0]
    assert first["step"] == 2 and first["first_step_seconds"] >= 2.0
    seconds_per_step = 128 / first["tok_per_s"]
    assert seconds_per_step < 0.5 and first["train_seconds"] < 0.5  # the second step's time alone
    assert first["elapsed_seconds"] >= 2.0


def test_mfu_is_logged_both_ways_against_a_known_peak_and_not_at_all_without_one(corpus, tmp_path, capsys):
    assert run(corpus, tmp_path / "cpu", "--max_steps=2") == 0  # the CPU: no peak FLOP/s known
    assert all(r["mfu"] is None and r["mfu_causal"] is None for r in read_log(tmp_path / "cpu") if "train_loss" in r)
    assert "MFU" not in capsys.readouterr().out
    assert run(corpus, tmp_path / "peak", "--max_steps=2", "--peak_flops=1e9") == 0  # as a GPU's would be
    second = [r for r in read_log(tmp_path / "peak") if "train_loss" in r][1]
    model, _ = load_checkpoint(str(tmp_path / "peak" / "ckpt.pt"))
    assert second["mfu"] == pytest.approx(flops_per_token(model) * second["tok_per_s"] / 1e9)
    assert second["mfu_causal"] == pytest.approx(flops_per_token(model, causal=True) * second["tok_per_s"] / 1e9)
    out = capsys.readouterr().out
    assert f"MFU {second['mfu'] * 100:.1f}% ({second['mfu_causal'] * 100:.1f}% causal)" in out


def test_a_log_line_after_only_the_first_step_reports_no_rate(corpus, tmp_path, capsys):
    assert run(corpus, tmp_path, "--max_steps=2", "--log_interval=1") == 0
    records = [r for r in read_log(tmp_path) if "train_loss" in r]
    assert records[0]["tok_per_s"] is None and records[0]["mfu"] is None and records[1]["tok_per_s"] > 0
    assert "(compiling)" in capsys.readouterr().out
