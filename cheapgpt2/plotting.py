"""
Reading the runs train.py logged (out_dir/log.jsonl and out_dir/config.json) and drawing them: the loss curves,
the convergence comparison, CommonsenseQA against tokens, the summary table. plot.py is the command line;
measure/ablation_cpu.py draws its ablation with the same axes and labels.
"""

import csv
import datetime
import json
import os
import platform

import matplotlib

matplotlib.use("Agg")  # files only: no display on a rented GPU box or in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

from cheapgpt2.data import read_jsonl  # noqa: E402

# GPT-2 124M's validation loss, by data set: (loss, who measured it). Drawn only for runs on that data set.
GPT2_124M_VAL_LOSS = {
    # OpenAI's GPT-2 124M checkpoint on build-nanogpt's FineWeb-Edu val shard (the first 100M tokens of
    # sample-10BT, as prepare_data.py's val split): `loss_baseline = 3.2924` in karpathy/build-nanogpt play.ipynb.
    "FineWeb-Edu": (3.2924, "OpenAI GPT-2 124M checkpoint (build-nanogpt)"),
    # FineWeb has no published number for OpenAI's checkpoint that we could verify; this is llm.c's GPT-2 124M
    # reproduction after 10B tokens, the "3.28 validation loss on FineWeb" target of KellerJordan/modded-nanogpt's README.
    "FineWeb": (3.28, "llm.c GPT-2 124M after 10B tokens (modded-nanogpt target)"),
}
# Zero-shot CommonsenseQA accuracy of OpenAI's GPT-2 124M, by train.py's csqa_format: (accuracy, legend). Drawn only
# when every run logged that format. The original train_gpt project's protocol (train.py's default "plain"):
# golark/train_gpt train_gpt/commonsense.py scores it, its train_gpt/evaluate.ipynb prints 345/1221 for gpt2.
# No published number for the cloze and mc formats could be verified; --gpt2_csqa_acc draws a measured one.
GPT2_124M_CSQA = {
    "plain": (345 / 1221, "OpenAI GPT-2 124M: 28.26% (question, \" \" + answer, summed log-probs; golark/train_gpt evaluate.ipynb)"),
}
GPT2_124M_CSQA_ACC = None  # --gpt2_csqa_acc's default: take the line from GPT2_124M_CSQA
CSQA_CHANCE = 0.20  # five answer choices


def read_run(run_dir):
    """One run as {name, config, train, val, csqa, elapsed_seconds, dollars, tokens}, or an error naming what is missing.

    train, val and csqa are lists of (tokens, value); elapsed_seconds and dollars come from the last training
    record (None before the first one); tokens is the most any record has seen."""
    log_path, config_path = os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "config.json")
    for path in (log_path, config_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist; is {run_dir} an out_dir that train.py wrote?")
    with open(config_path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path} is not JSON ({e.msg}); rerun train.py to rewrite it") from None
    records = []
    for line_number, record in read_jsonl(log_path):
        if not isinstance(record, dict) or "tokens" not in record:
            raise ValueError(f"{log_path} line {line_number} has no 'tokens' field; is it a log that train.py wrote?")
        records.append(record)
    if not records:
        raise ValueError(f"{log_path} is empty: the run logged nothing yet")
    train = [(r["tokens"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in records if "val_loss" in r]
    csqa = [(r["tokens"], r["csqa_acc"]) for r in records if r.get("csqa_acc") is not None]
    last_train = next((r for r in reversed(records) if "train_loss" in r), {})
    return {"name": os.path.basename(os.path.normpath(run_dir)), "config": config, "train": train, "val": val,
            "csqa": csqa, "elapsed_seconds": last_train.get("elapsed_seconds"), "dollars": last_train.get("dollars"),
            "tokens": max(r["tokens"] for r in records), "trained_on": trained_on(run_dir)}


def trained_on(run_dir):
    """The date (YYYY-MM-DD) a run last trained: when its checkpoint was last written. train.py started again on a
    finished run evaluates it once more and rewrites log.jsonl and config.json, not the checkpoint; without a
    checkpoint, the log's date."""
    for name in ("ckpt.pt", "ckpt", "log.jsonl"):  # ckpt: FSDP's sharded checkpoint folder
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            return datetime.date.fromtimestamp(os.path.getmtime(path)).isoformat()
    return None


def dates(runs):
    """The runs' training dates as one phrase: a day, or the first and last day."""
    days = sorted({run.get("trained_on") for run in runs} - {None})
    return "date not recorded" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def python_of(data):
    """For Python's help() text, which changes with the Python version: the version this process runs, the .venv's
    that make demo prepares the text and draws the picture with."""
    return f" (Python {platform.python_version()}'s)" if data == "pydoc" else ""


def loss_curve_markdown(run, command):
    """The figures of a loss curve's picture, for media/ beside it: what trained on what, where and when, and its
    first and last validation loss."""
    cfg = run["config"]
    data = dataset_name(cfg.get("data_dir"))
    lines = [f"`{command}`: {run['name']} ({describe_variant(cfg)}, seed {cfg.get('seed')}, {cfg.get('max_steps')} steps "
             f"of {cfg.get('total_batch_size', 0):,} tokens) on {TEXT_NAMES.get(data, data)}{python_of(data)}; "
             f"{cfg.get('hardware', 'hardware not recorded')}; trained {dates([run])}.", "",
             "| | tokens | validation loss |", "|---|---:|---:|"]
    if run["val"]:
        (first_tokens, first_loss), (last_tokens, last_loss) = run["val"][0], run["val"][-1]
        lines += [f"| first evaluation | {first_tokens:,} | {first_loss:.2f} |", f"| last evaluation | {last_tokens:,} | {last_loss:.2f} |"]
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# words and numbers for labels and tables

def dataset_name(data_dir):
    """FineWeb-Edu, FineWeb, or the folder's own name: which reference loss applies is read off data_dir."""
    folder = os.path.basename(os.path.normpath(data_dir or "")).lower()
    if "fineweb" in folder:
        return "FineWeb-Edu" if "edu" in folder else "FineWeb"
    return folder or "unknown data"


def format_tokens(n):
    """2_900_000_000 -> '2.9B', 40960 -> '41K': tokens in the units people say them in."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:g}"


def format_duration(seconds):
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def describe_variant(config):
    """'RoPE, SwiGLU, max lr 1.8e-3': what tells the variants apart, from the resolved config."""
    parts = ["RoPE" if config.get("pos_emb") == "rope" else "learned pos",
             {"swiglu": "SwiGLU", "relu2": "ReLU²"}.get(config.get("mlp"), "GELU")]
    if config.get("optimizer") == "muon":
        parts.append("Muon")
    if "max_lr" in config:
        parts.append("max lr " + f"{config['max_lr']:.1e}".replace("e-0", "e-"))
    if (config.get("n_layer"), config.get("n_embd")) != (12, 768):  # say the size only when it is not GPT-2 124M's
        parts.append(f"{config.get('n_layer')} layers x {config.get('n_embd')}")
    return ", ".join(parts)


def run_label(run):
    return f"{run['name']} ({describe_variant(run['config'])})"


def subtitle(runs):
    """'1 x NVIDIA H100 80GB HBM3 | data: data/fineweb_edu (FineWeb-Edu)', listing each distinct value once."""
    hardware = dict.fromkeys(r["config"].get("hardware", "hardware not recorded") for r in runs)
    data = dict.fromkeys(f"{r['config'].get('data_dir', '?')} ({dataset_name(r['config'].get('data_dir'))})" for r in runs)
    return f"{' / '.join(hardware)}  |  data: {' / '.join(data)}"


def tokens_axis(ax, log=False):
    if log:
        ax.set_xscale("log")  # before the formatters: setting the scale resets them

        def minor_label(x, _):  # 2x and 5x between the powers of ten, when they fit: spanning under 3 decades
            low, high = ax.get_xlim()
            return format_tokens(x) if high < 1000 * low and f"{x:e}"[0] in "25" else ""
        ax.xaxis.set_minor_formatter(FuncFormatter(minor_label))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_tokens(x)))
    ax.set_xlabel("tokens seen" + (" (log scale)" if log else ""))


def finish(fig, title, runs, path):
    """Title, subtitle and one legend under the panels (where it hides no data), then save and close."""
    by_label = {}  # every panel's lines once: a run may be missing from one panel (too short for the zoom)
    for ax in fig.axes:
        by_label.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(by_label.values(), by_label.keys(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    inch = 1 / fig.get_figheight()  # layout in figure fractions
    fig.text(0.5, 1 - 0.12 * inch, title, ha="center", va="top", fontsize=12)
    fig.text(0.5, 1 - 0.34 * inch, subtitle(runs), ha="center", va="top", fontsize=8, color="dimgray")
    legend_rows = (len(by_label) + 1) // 2
    fig.tight_layout(rect=(0, (0.25 + 0.2 * legend_rows) * inch, 1, 1 - 0.45 * inch))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return fig


# -----------------------------------------------------------------------------
# pictures

TEXT_NAMES = {"pydoc": "Python's help() text", "shakespeare": "Tiny Shakespeare"}  # the CPU targets' data, in words


def smooth(values, weight=0.6):
    """Exponential moving average with bias correction (TensorBoard's smoothing): the trend of a noisy curve."""
    smoothed, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**i))
    return smoothed


def training_passes(config, tokens):
    """How many times training has gone over its data by tokens, from data_dir/manifest.json; None where unknown."""
    try:
        with open(os.path.join(config.get("data_dir") or "", "manifest.json")) as f:
            return tokens / json.load(f)["tokens"]["train"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def plot_loss_curve(run, path):
    """
    Training and validation loss against tokens seen, for one run: each logged training batch faint, their
    smoothed trend, and the validation loss; a note under the axes says why the two differ.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if run["train"]:
        tokens, losses = zip(*run["train"])
        ax.plot(tokens, losses, color="C0", alpha=0.3, linewidth=1, marker="o" if len(tokens) == 1 else None,
                markersize=3, label="train loss (each logged batch)")
        if len(tokens) >= 5:
            ax.plot(tokens, smooth(losses), color="C0", label="train loss, smoothed")
    if run["val"]:
        ax.plot(*zip(*run["val"]), "o-", color="C1", markersize=4, label="validation loss (held-out text)")
    cfg = run["config"]
    data = dataset_name(cfg.get("data_dir"))
    ax.set_title(f"{run['name']}: {describe_variant(cfg)}\ntrained on {TEXT_NAMES.get(data, data)}", fontsize=10)
    tokens_axis(ax)
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=9)
    passes = training_passes(cfg, run["tokens"])
    repeats = f" ({passes:.1f} passes over the training text here)" if passes else ""
    note = ("Train loss: each step's own batch, so it jumps from batch to batch, and it drops below validation once\n"
            f"batches repeat text already trained on{repeats}. Validation: the same held-out text at every evaluation.\n"
            f"hardware: {cfg.get('hardware', 'not recorded')}")
    fig.text(0.01, 0.01, note, ha="left", va="bottom", fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def plot_convergence(runs, path):
    """Validation loss against tokens seen, one line per run, in two panels: the whole run on log-scaled
    tokens (the evaluation at 0 tokens cannot be drawn there), and the second half of training on linear
    tokens, where the variants differ by hundredths of a nat. GPT-2 124M's loss is dashed where known."""
    fig, (ax_all, ax_end) = plt.subplots(1, 2, figsize=(13, 6))
    last_tokens = max(tokens for run in runs for tokens, _ in run["val"])
    for i, run in enumerate(runs):
        color = f"C{i}"
        whole = [(t, loss) for t, loss in run["val"] if t > 0]
        end = [(t, loss) for t, loss in run["val"] if t >= last_tokens / 2]
        label = f"{run_label(run)}: final {run['val'][-1][1]:.3f}"
        if whole:
            ax_all.plot(*zip(*whole), "o-", markersize=3, color=color, label=label)
        if end:
            ax_end.plot(*zip(*end), "o-", markersize=3, color=color, label=label)
    for data in dict.fromkeys(dataset_name(run["config"].get("data_dir")) for run in runs):
        if data in GPT2_124M_VAL_LOSS:
            loss, source = GPT2_124M_VAL_LOSS[data]
            for ax in (ax_all, ax_end):
                ax.axhline(loss, color="black", linestyle="--", linewidth=1, label=f"{source} on {data}: {loss:.3f}")
    tokens_axis(ax_all, log=True)
    tokens_axis(ax_end)
    ax_all.set_title("whole run", fontsize=10)
    ax_end.set_title(f"second half of training (from {format_tokens(last_tokens / 2)} tokens)", fontsize=10)
    for ax in (ax_all, ax_end):
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(alpha=0.3, which="both")
    return finish(fig, "Validation loss against tokens seen", runs, path)


def csqa_format(run):
    """The CommonsenseQA format a run logged as csqa_acc: its config's csqa_format; cloze before that key existed."""
    return run["config"].get("csqa_format", "cloze")


def plot_commonsense_qa(runs, path, gpt2_acc=GPT2_124M_CSQA_ACC):
    """Zero-shot CommonsenseQA accuracy against tokens seen for the runs that logged csqa_acc, with random
    chance and GPT-2 124M's accuracy dashed: gpt2_acc when given, else GPT2_124M_CSQA's for the runs' format
    (none when the runs logged different formats). Returns None, and writes nothing, when no run has any."""
    runs_with_acc = [run for run in runs if run["csqa"]]
    if not runs_with_acc:
        return None
    formats = {csqa_format(run) for run in runs_with_acc}
    gpt2_label = f"OpenAI GPT-2 124M: {gpt2_acc:.1%}" if gpt2_acc is not None else None
    if gpt2_acc is None and len(formats) == 1 and formats <= GPT2_124M_CSQA.keys():
        gpt2_acc, gpt2_label = GPT2_124M_CSQA[formats.pop()]
    fig, ax = plt.subplots(figsize=(10, 6))
    for i, run in enumerate(runs):  # colors follow the run's place in the list, as in the loss picture
        if run["csqa"]:
            best = max(acc for _, acc in run["csqa"])
            ax.plot(*zip(*run["csqa"]), "o-", markersize=4, color=f"C{i}", label=f"{run_label(run)}: best {best:.1%}")
    if gpt2_acc is not None:
        ax.axhline(gpt2_acc, color="black", linestyle="--", linewidth=1, label=gpt2_label)
    ax.axhline(CSQA_CHANCE, color="gray", linestyle="--", linewidth=1, label=f"random chance: {CSQA_CHANCE:.0%}")
    tokens_axis(ax)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel(f"accuracy (zero-shot, {' / '.join(sorted({csqa_format(run) for run in runs_with_acc}))} format)")
    ax.set_ylim(bottom=min(ax.get_ylim()[0], CSQA_CHANCE - 0.02))  # chance on the frame's edge would be hard to see
    ax.grid(alpha=0.3)
    return finish(fig, "CommonsenseQA zero-shot accuracy against tokens seen", runs_with_acc, path)


# -----------------------------------------------------------------------------
# the summary table

SUMMARY_COLUMNS = ("variant", "final_val_loss", "best_csqa_acc", "tokens", "wall_seconds", "dollars", "hardware", "trained_on")


def summary_rows(runs):
    """One dict per run with SUMMARY_COLUMNS; None where the log does not say."""
    return [{"variant": run["name"],
             "final_val_loss": run["val"][-1][1] if run["val"] else None,
             "best_csqa_acc": max(acc for _, acc in run["csqa"]) if run["csqa"] else None,
             "tokens": run["tokens"], "wall_seconds": run["elapsed_seconds"], "dollars": run["dollars"],
             "hardware": run["config"].get("hardware"), "trained_on": run.get("trained_on")} for run in runs]


def summary_markdown(rows):
    def cell(value, fmt):
        return "—" if value is None else fmt(value)

    machines = " / ".join(dict.fromkeys(row["hardware"] or "hardware not recorded" for row in rows))
    lines = [f"`plot.py`, {len(rows)} run(s), trained {dates(rows)} on {machines}.", "",
             "| variant | final val loss | best CommonsenseQA acc | tokens | wall time | est. cost | hardware |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(" | ".join([
            f"| {row['variant']}", cell(row["final_val_loss"], "{:.4f}".format), cell(row["best_csqa_acc"], "{:.1%}".format),
            f"{row['tokens']:,}", cell(row["wall_seconds"], format_duration), cell(row["dollars"], "${:.2f}".format),
            f"{row['hardware'] or '—'} |"]))
    lines.append("")
    lines.append("Wall time and cost are the training steps' (evaluations excluded), at each run's gpu_hourly_cost.")
    return "\n".join(lines) + "\n"


def write_summary(rows, out_dir):
    """media/summary.md and media/summary.csv; returns the markdown."""
    os.makedirs(out_dir, exist_ok=True)
    markdown = summary_markdown(rows)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(out_dir, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return markdown
