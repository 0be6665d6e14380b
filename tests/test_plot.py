"""
Specification of plot.py on small hand-written runs: what each picture draws (the data handed to
matplotlib, not pixels), the summary table, and the one-line messages for runs it cannot use.

    python -m pytest -q tests/test_plot.py
"""

import csv
import datetime
import json
import os

import pytest

import plot

from cheapgpt2 import plotting

TOKENS_PER_STEP = 524288


def write_run(root, name, records, **config):
    """An out_dir as train.py writes it: config.json (with hardware) and log.jsonl, one record a line."""
    run_dir = os.path.join(root, name)
    os.makedirs(run_dir, exist_ok=True)
    config = {"n_layer": 12, "n_embd": 768, "pos_emb": "learned", "mlp": "gelu", "max_lr": 6e-4,
              "data_dir": "data/fineweb_edu", "gpu_hourly_cost": 3.0, "hardware": "1 x NVIDIA H100 80GB HBM3", **config}
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(run_dir, "log.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return run_dir


def training_log(val_losses, csqa=None, eval_every=2):
    """Evaluations every eval_every steps (val_losses[i] at step i * eval_every), training records between them."""
    records = []
    for i, val_loss in enumerate(val_losses):
        step = i * eval_every
        evaluation = {"step": step, "tokens": step * TOKENS_PER_STEP, "val_loss": val_loss}
        if csqa is not None:
            evaluation["csqa_acc"] = csqa[i]
        records.append(evaluation)
        if i < len(val_losses) - 1:
            for s in range(step + 1, step + eval_every + 1):
                records.append({"step": s, "tokens": s * TOKENS_PER_STEP, "train_loss": val_loss - 0.01, "lr": 6e-4,
                                "grad_norm": 0.5, "tok_per_s": 1e6, "mfu": 0.4, "elapsed_seconds": 0.5 * s,
                                "dollars": 0.5 * s / 3600 * 3.0})
    return records


@pytest.fixture
def two_runs(tmp_path):
    baseline = write_run(tmp_path, "baseline", training_log([10.9, 4.0, 3.5, 3.3], csqa=[0.2, 0.22, 0.25, 0.24]))
    swiglu = write_run(tmp_path, "swiglu", training_log([10.9, 3.9, 3.4, 3.2], csqa=[0.21, 0.23, 0.26, 0.27]),
                       pos_emb="rope", mlp="swiglu", max_lr=1.8e-3)
    return baseline, swiglu


def dashed(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() == "--"]


def solid(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() != "--"]


def test_convergence_plot_draws_each_runs_val_loss_against_tokens(two_runs, tmp_path):
    runs = [plotting.read_run(d) for d in two_runs]
    fig = plotting.plot_convergence(runs, str(tmp_path / "media" / "convergence_comparison.png"))
    assert os.path.getsize(tmp_path / "media" / "convergence_comparison.png") > 0
    ax_all, ax_end = fig.axes
    baseline, swiglu = solid(ax_all)
    # the evaluation at 0 tokens cannot sit on a log axis; every later one is drawn
    assert list(baseline.get_xdata()) == [2 * TOKENS_PER_STEP, 4 * TOKENS_PER_STEP, 6 * TOKENS_PER_STEP]
    assert list(baseline.get_ydata()) == [4.0, 3.5, 3.3]
    assert list(swiglu.get_ydata()) == [3.9, 3.4, 3.2]
    assert ax_all.get_xscale() == "log" and ax_end.get_xscale() == "linear"
    assert baseline.get_label() == "baseline (learned pos, GELU, max lr 6.0e-4): final 3.300"
    assert swiglu.get_label() == "swiglu (RoPE, SwiGLU, max lr 1.8e-3): final 3.200"
    # the zoomed panel keeps the second half of training: from 3 of 6 steps' tokens on
    assert [list(line.get_xdata()) for line in solid(ax_end)] == [[4 * TOKENS_PER_STEP, 6 * TOKENS_PER_STEP]] * 2
    assert "tokens seen" in ax_all.get_xlabel() and "nats/token" in ax_all.get_ylabel()


def test_gpt2_reference_loss_is_dashed_only_on_fineweb_data(tmp_path):
    edu = plotting.read_run(write_run(tmp_path, "edu", training_log([10.9, 3.5])))
    fig = plotting.plot_convergence([edu], str(tmp_path / "edu.png"))
    for ax in fig.axes:
        (reference,) = dashed(ax)
        assert list(reference.get_ydata()) == [3.2924, 3.2924]
        assert "FineWeb-Edu" in reference.get_label()

    fineweb = plotting.read_run(write_run(tmp_path, "fineweb", training_log([10.9, 3.5]), data_dir="data/fineweb10B"))
    (reference,) = dashed(plotting.plot_convergence([fineweb], str(tmp_path / "fineweb.png")).axes[0])
    assert list(reference.get_ydata()) == [3.28, 3.28]

    pydoc = plotting.read_run(write_run(tmp_path, "pydoc", training_log([10.9, 5.5]), data_dir="data/pydoc"))
    fig = plotting.plot_convergence([pydoc], str(tmp_path / "pydoc.png"))
    assert all(dashed(ax) == [] for ax in fig.axes)


def test_subtitle_names_the_hardware_and_data_of_every_run(tmp_path):
    gpu = plotting.read_run(write_run(tmp_path, "gpu", training_log([10.9, 3.5])))
    cpu = plotting.read_run(write_run(tmp_path, "cpu", training_log([10.9, 5.5]), hardware="CPU, 2 cores", data_dir="data/pydoc"))
    assert plotting.subtitle([gpu]) == "1 x NVIDIA H100 80GB HBM3  |  data: data/fineweb_edu (FineWeb-Edu)"
    assert plotting.subtitle([gpu, cpu, gpu]) == ("1 x NVIDIA H100 80GB HBM3 / CPU, 2 cores  |  "
                                              "data: data/fineweb_edu (FineWeb-Edu) / data/pydoc (pydoc)")


def test_commonsense_qa_plot_draws_accuracy_with_chance_dashed(two_runs, tmp_path):
    runs = [plotting.read_run(d) for d in two_runs]
    fig = plotting.plot_commonsense_qa(runs, str(tmp_path / "commonsense_qa.png"), gpt2_acc=None)
    assert os.path.getsize(tmp_path / "commonsense_qa.png") > 0
    (ax,) = fig.axes
    baseline, swiglu = solid(ax)
    assert list(baseline.get_xdata()) == [0, 2 * TOKENS_PER_STEP, 4 * TOKENS_PER_STEP, 6 * TOKENS_PER_STEP]
    assert list(baseline.get_ydata()) == [0.2, 0.22, 0.25, 0.24]
    assert swiglu.get_label() == "swiglu (RoPE, SwiGLU, max lr 1.8e-3): best 27.0%"
    (chance,) = dashed(ax)  # GPT-2's line only when its accuracy is known
    assert list(chance.get_ydata()) == [0.2, 0.2] and "chance" in chance.get_label()

    fig = plotting.plot_commonsense_qa(runs, str(tmp_path / "with_gpt2.png"), gpt2_acc=0.3)
    assert sorted(line.get_ydata()[0] for line in dashed(fig.axes[0])) == [0.2, 0.3]


def test_commonsense_qa_plot_draws_gpt2s_line_for_the_plain_format_with_its_source(tmp_path):
    log = training_log([10.9, 4.0], csqa=[0.2, 0.25])
    plain = [plotting.read_run(write_run(tmp_path, name, log, csqa_format="plain")) for name in ("a", "b")]
    fig = plotting.plot_commonsense_qa(plain, str(tmp_path / "plain.png"))
    (gpt2,) = [line for line in dashed(fig.axes[0]) if "chance" not in line.get_label()]
    assert gpt2.get_ydata()[0] == pytest.approx(0.2826, abs=5e-5)
    assert "28.26%" in gpt2.get_label() and "golark/train_gpt" in gpt2.get_label()
    # another format (cloze: runs from before csqa_format), or a mix: no GPT-2 line, as no number is known for it
    cloze = plotting.read_run(write_run(tmp_path, "old", log))
    for runs in ([cloze], [plain[0], cloze]):
        fig = plotting.plot_commonsense_qa(runs, str(tmp_path / "other.png"))
        assert [line.get_ydata()[0] for line in dashed(fig.axes[0])] == [0.2]


def test_commonsense_qa_plot_is_skipped_when_no_run_logged_accuracy(tmp_path, capsys):
    run_dir = write_run(tmp_path, "baseline", training_log([10.9, 3.5]))
    assert plotting.plot_commonsense_qa([plotting.read_run(run_dir)], str(tmp_path / "csqa.png")) is None
    assert plot.main([run_dir, "--out", str(tmp_path / "media")]) == 0
    assert not os.path.exists(tmp_path / "media" / "commonsense_qa.png")
    assert os.path.getsize(tmp_path / "media" / "convergence_comparison.png") > 0
    assert "no run logged csqa_acc" in capsys.readouterr().err


def test_summary_table_has_one_row_per_run(two_runs, tmp_path, capsys):
    assert plot.main([*two_runs, "--out", str(tmp_path / "media")]) == 0
    markdown = (tmp_path / "media" / "summary.md").read_text()
    assert "| baseline | 3.3000 | 25.0% | 3,145,728 | 3s | $0.00 | 1 x NVIDIA H100 80GB HBM3 |" in markdown
    assert "| swiglu | 3.2000 | 27.0% |" in markdown
    assert markdown in capsys.readouterr().out  # printed too
    with open(tmp_path / "media" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["baseline", "swiglu"]
    assert float(rows[0]["final_val_loss"]) == 3.3 and float(rows[0]["best_csqa_acc"]) == 0.25
    assert int(rows[0]["tokens"]) == 6 * TOKENS_PER_STEP and float(rows[0]["wall_seconds"]) == 3.0
    assert float(rows[0]["dollars"]) == pytest.approx(3.0 / 3600 * 3.0)
    for name in ("convergence_comparison.png", "commonsense_qa.png"):
        assert os.path.getsize(tmp_path / "media" / name) > 0


@pytest.mark.parametrize("damage, message", [
    ("no_log", "log.jsonl does not exist"),
    ("empty_log", "log.jsonl is empty"),
    ("no_config", "config.json does not exist"),
    ("bad_line", "line 2 is not JSON"),
    ("no_tokens", "line 1 has no 'tokens' field"),
])
def test_unreadable_run_is_named_in_one_line_and_skipped(two_runs, tmp_path, capsys, damage, message):
    broken = write_run(tmp_path, "broken", training_log([10.9, 3.5]))
    log_path, config_path = os.path.join(broken, "log.jsonl"), os.path.join(broken, "config.json")
    if damage == "no_log":
        os.remove(log_path)
    elif damage == "empty_log":
        open(log_path, "w").close()
    elif damage == "no_config":
        os.remove(config_path)
    elif damage == "bad_line":
        with open(log_path, "a") as f:
            f.write('{"step": 7, "tok')  # a record cut off mid-write
        with open(log_path) as f:
            lines = f.readlines()
        with open(log_path, "w") as f:
            f.writelines([lines[0], lines[-1]])
    elif damage == "no_tokens":
        with open(log_path, "w") as f:
            f.write(json.dumps({"step": 0, "val_loss": 10.9}) + "\n")

    assert plot.main([two_runs[0], broken, "--out", str(tmp_path / "media")]) == 0
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipping")]
    assert len(skipped) == 1 and broken in skipped[0] and message in skipped[0]
    with open(tmp_path / "media" / "summary.csv") as f:
        assert [r["variant"] for r in csv.DictReader(f)] == ["baseline"]


def test_run_without_val_loss_is_named_and_kept_in_the_summary(two_runs, tmp_path, capsys):
    records = [r for r in training_log([10.9, 3.5, 3.4]) if "val_loss" not in r]
    early = write_run(tmp_path, "early", records)
    assert plot.main([two_runs[0], early, "--out", str(tmp_path / "media")]) == 0
    assert "early: no val_loss in its log.jsonl yet; left out of convergence_comparison.png" in capsys.readouterr().err
    assert "| early | — | — | 2,097,152 | 2s |" in (tmp_path / "media" / "summary.md").read_text()


def test_no_readable_run_exits_1(tmp_path, capsys):
    assert plot.main([str(tmp_path / "nothing_here"), "--out", str(tmp_path / "media")]) == 1
    assert plot.main(["--out", str(tmp_path / "media")]) == 1
    err = capsys.readouterr().err
    assert "no run could be read" in err and "no run folders given" in err
    assert not os.path.exists(tmp_path / "media" / "summary.md")


def test_loss_curve_mode_draws_one_runs_train_and_val_loss(tmp_path):
    run_dir = write_run(tmp_path, "demo_cpu", training_log([10.9, 6.0, 5.5]), n_layer=4, n_embd=128, data_dir="data/pydoc")
    assert plot.main([run_dir, "--loss_curve", str(tmp_path / "demo_loss.png")]) == 0
    assert os.path.getsize(tmp_path / "demo_loss.png") > 0
    fig = plotting.plot_loss_curve(plotting.read_run(run_dir), str(tmp_path / "again.png"))
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["train loss (each logged batch)", "validation loss (held-out text)"]
    assert list(fig.axes[0].get_lines()[1].get_ydata()) == [10.9, 6.0, 5.5]


def test_words_for_numbers_and_data():
    assert plotting.format_tokens(2_998_927_360) == "3B" and plotting.format_tokens(40960) == "41K" and plotting.format_tokens(0) == "0"
    assert plotting.format_duration(6725) == "1h 52m" and plotting.format_duration(190) == "3m 10s"
    assert [plotting.dataset_name(d) for d in ("data/fineweb_edu", "data/fineweb10B/", "data/pydoc")] == \
        ["FineWeb-Edu", "FineWeb", "pydoc"]
    assert plotting.describe_variant({"pos_emb": "rope", "mlp": "gelu", "max_lr": 1.8e-3, "n_layer": 4, "n_embd": 128}) == \
        "RoPE, GELU, max lr 1.8e-3, 4 layers x 128"


def demo_log(train_losses, tokens_per_step=2048, log_interval=5, eval_interval=10):
    """A CPU demo's log: train_losses[i] at step (i + 1) * log_interval, val loss every eval_interval steps."""
    records = [{"step": 0, "tokens": 0, "val_loss": 10.83}]
    for i, loss in enumerate(train_losses):
        step = (i + 1) * log_interval
        records.append({"step": step, "tokens": step * tokens_per_step, "train_loss": loss, "elapsed_seconds": step})
        if step % eval_interval == 0:
            records.append({"step": step, "tokens": step * tokens_per_step, "val_loss": loss + 0.5})
    return records


def test_loss_curve_says_what_was_trained_on_what_with_thousands_of_tokens(tmp_path):
    (tmp_path / "pydoc").mkdir()
    (tmp_path / "pydoc" / "manifest.json").write_text(json.dumps({"tokens": {"val": 13_901, "train": 125_115}}))
    run_dir = write_run(tmp_path, "demo_cpu", demo_log([7.0, 6.1, 5.2, 5.6, 4.8] * 4), n_layer=4, n_embd=128,
                        data_dir=str(tmp_path / "pydoc"), pos_emb="rope", mlp="relu2", optimizer="muon", max_lr=4e-3)
    fig = plotting.plot_loss_curve(plotting.read_run(run_dir), str(tmp_path / "demo_loss.png"))
    ax = fig.axes[0]
    assert ax.get_title() == "demo_cpu: RoPE, ReLU², Muon, max lr 4.0e-3, 4 layers x 128\ntrained on Python's help() text"
    ticks = [ax.xaxis.get_major_formatter()(tick, i) for i, tick in enumerate(ax.get_xticks())]
    assert "100K" in ticks and "200K" in ticks
    note = " ".join(text.get_text() for text in fig.texts)
    assert "each step's own batch" in note and "(1.6 passes over the training text here)" in note  # 204,800 / 125,115


def test_loss_curve_smooths_the_noisy_train_loss_beside_the_raw_one(tmp_path):
    pandas = pytest.importorskip("pandas")  # comes with datasets
    losses = [7.0, 6.1, 5.2, 5.6, 4.8, 5.3, 4.4, 4.9]
    run_dir = write_run(tmp_path, "demo_cpu", demo_log(losses), n_layer=4, n_embd=128, data_dir="data/pydoc")
    lines = {line.get_label(): line for line in plotting.plot_loss_curve(plotting.read_run(run_dir), str(tmp_path / "a.png")).axes[0].get_lines()}
    assert list(lines) == ["train loss (each logged batch)", "train loss, smoothed", "validation loss (held-out text)"]
    assert list(lines["train loss (each logged batch)"].get_ydata()) == losses
    # TensorBoard's debiased exponential moving average is pandas' adjusted one with alpha = 1 - weight
    reference = pandas.Series(losses).ewm(alpha=0.4, adjust=True).mean()
    assert list(lines["train loss, smoothed"].get_ydata()) == pytest.approx(list(reference))


def test_loss_curve_of_a_run_with_one_train_record_lists_no_empty_series(tmp_path):
    run_dir = write_run(tmp_path, "demo_cpu", demo_log([7.0]), n_layer=4, n_embd=128, data_dir="data/pydoc")
    ax = plotting.plot_loss_curve(plotting.read_run(run_dir), str(tmp_path / "a.png")).axes[0]
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["train loss (each logged batch)", "validation loss (held-out text)"]
    for line in handles:  # a single point is drawn only as a marker: a line of one point draws nothing
        assert len(line.get_xdata()) >= 2 or line.get_marker() not in (None, "None", "", " ")


def test_loss_curve_mode_writes_its_figures_beside_the_picture_with_the_machine_and_the_training_date(tmp_path):
    # the README's demo row cites media/demo_loss.md: a picture's figures cannot be checked, a table's can
    run_dir = write_run(tmp_path, "demo_cpu", demo_log([7.0, 6.1, 5.2, 4.8]), n_layer=4, n_embd=128, data_dir="data/pydoc",
                        hardware="CPU, 2 cores (AMD EPYC)", seed=1337, max_steps=20, total_batch_size=2048)
    (tmp_path / "demo_cpu" / "ckpt.pt").touch()
    finished = datetime.datetime(2026, 11, 25, 12).timestamp()
    os.utime(tmp_path / "demo_cpu" / "ckpt.pt", (finished, finished))  # the log was rewritten later, by an evaluation
    assert plot.main([run_dir, "--loss_curve", str(tmp_path / "demo_loss.png")]) == 0
    figures = (tmp_path / "demo_loss.md").read_text()
    assert "CPU, 2 cores (AMD EPYC)" in figures and "trained 2026-11-25" in figures and "20 steps of 2,048 tokens" in figures
    assert "| first evaluation | 0 | 10.83 |" in figures and "| last evaluation | 40,960 | 5.30 |" in figures


def test_the_summary_names_the_machines_and_the_days_the_runs_trained(two_runs):
    for day, run_dir in zip((1, 3), two_runs):
        stamp = datetime.datetime(2026, 12, day, 12).timestamp()
        os.utime(os.path.join(run_dir, "log.jsonl"), (stamp, stamp))  # no checkpoint: the log's date
    markdown = plotting.summary_markdown(plotting.summary_rows([plotting.read_run(d) for d in two_runs]))
    assert markdown.startswith("`plot.py`, 2 run(s), trained 2026-12-01 to 2026-12-03 on 1 x NVIDIA H100 80GB HBM3.")
