"""
CPU-scale ablation: every variant, shrunk to a few million parameters, trained on the same local corpus
for the same token budget with two seeds each, plus a learning-rate sweep of the baseline architecture.
Renders media/ablation_cpu.png/.md and media/ablation_speedrun.png/.md (docs/results.md's tables). About two hours on 2 cores.

    make ablation_cpu                                   # Tiny Shakespeare (found or downloaded; offline, pydoc text)
    python -m measure.ablation_cpu --data_dir data/shakespeare  # shards that prepare_data.py wrote
    python -m measure.ablation_cpu --data_dir data/shakespeare --report_only   # redraw from the logged runs
    python -m measure.ablation_cpu --name ablation_speedrun        # the other table: the speedrun less each technique
    python -m measure.ablation_cpu --variants modern,speedrun --name mine   # a subset -> media/mine.png/.md

--name picks the table and, without --variants, its runs (TABLES): ablation_cpu (the default) is the seed's variants
and the learning-rate sweep, ablation_speedrun the speedrun less each technique; `make ablation_cpu` writes both.

Each run is `python train.py configs/VARIANT.py` with the TINY overrides below, in out/ablation_cpu/NAME_seedN/
(its console output in train.txt), two at a time on one core each; a finished run is not trained again,
an interrupted one resumes.
"""

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys

import numpy as np
import torch

from cheapgpt2 import plotting
from cheapgpt2.config import TrainConfig
from cheapgpt2.model import GPT

# The seed's variants as their config files define them; only shapes, budget and system settings shrink.
# The sweep: the baseline architecture (learned positions, GELU) at 1x, 3x and 9x the baseline's max_lr;
# 1x and 3x are `baseline` and `increase_max_lr` themselves.
SPEEDRUN_CPU = ["--attn_window=128", "--attn_window_start=16", "--muon_momentum_warmup_steps=30"]
VARIANTS = [  # (name, config file, extra overrides)
    ("baseline", "configs/baseline.py", []),
    ("increase_max_lr", "configs/increase_max_lr.py", []),
    ("baseline_lr_5.4e-3", "configs/baseline.py", ["--max_lr=5.4e-3"]),
    ("rotational_pos_emb", "configs/rotational_pos_emb.py", []),
    ("swiglu", "configs/swiglu.py", []),
    ("modern", "configs/modern.py", []),
    # the speedrun at this scale: the window grows from 16 to the whole 128-token context, the momentum warms up over
    # the first 30 of 150 steps (the record's 300 of 1,480); then the speedrun less each technique in turn
    ("speedrun", "configs/speedrun.py", SPEEDRUN_CPU),
    ("speedrun_no_doc_mask", "configs/speedrun.py", SPEEDRUN_CPU + ["--doc_mask=False"]),
    ("speedrun_no_window", "configs/speedrun.py", SPEEDRUN_CPU + ["--attn_window=0", "--attn_window_start=0"]),
    ("speedrun_no_value_embeds", "configs/speedrun.py", SPEEDRUN_CPU + ["--value_embeds=False"]),
    ("speedrun_no_unet_skips", "configs/speedrun.py", SPEEDRUN_CPU + ["--unet_skips=False"]),
    ("speedrun_no_momentum_warmup", "configs/speedrun.py", SPEEDRUN_CPU + ["--muon_momentum_warmup_steps=0"]),
]
# The committed tables, each the runs it reports (by --name): the seed's variants and the sweep; the speedrun less
# each technique, with the baseline (the target) and modern trained beside it. A run is shared by the tables.
TABLES = {"ablation_cpu": ["baseline", "increase_max_lr", "baseline_lr_5.4e-3", "rotational_pos_emb", "swiglu", "modern"],
          "ablation_speedrun": ["baseline", "modern", "speedrun", "speedrun_no_doc_mask", "speedrun_no_window",
                                "speedrun_no_value_embeds", "speedrun_no_unet_skips", "speedrun_no_momentum_warmup"]}
SEEDS = (0, 1)
MAX_STEPS = 150
TOKENS_PER_STEP = 2048  # x 150 steps = 307,200 tokens: one pass over Tiny Shakespeare's 304k training tokens
TINY = [
    "--n_layer=4", "--n_head=4", "--n_embd=128", "--block_size=128",
    "--batch_size=16", f"--total_batch_size={TOKENS_PER_STEP}", f"--max_steps={MAX_STEPS}", "--warmup_steps=10",
    "--eval_interval=15", "--eval_tokens=16384", "--log_interval=10", "--ckpt_interval=50",
    "--device=cpu", "--dtype=float32", "--compile=False", "--sample_tokens=0", "--csqa_data=",
    "--hellaswag_data=", "--gpu_hourly_cost=0.0",
]
OUT = "out/ablation_cpu"


def run_dir(name, seed):
    return os.path.join(OUT, f"{name}_seed{seed}")


def train_one(name, config, extra, seed, data_dir):
    """One run in its own process on one core, its output in RUN_DIR/train.txt; a one-line error if it did not finish."""
    out_dir = run_dir(name, seed)
    os.makedirs(out_dir, exist_ok=True)
    argv = [sys.executable, "train.py", config, *TINY, *extra, f"--seed={seed}", f"--data_dir={data_dir}", f"--out_dir={out_dir}"]
    with open(os.path.join(out_dir, "train.txt"), "a") as output:
        # one thread per run: two small runs side by side use 2 cores better than one run on two threads
        result = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # train.py checkpointed and stopped
        raise ValueError(f"{name} (seed {seed}) was stopped; run the same command to resume")
    if result.returncode != 0:
        raise ValueError(f"training {name} (seed {seed}) failed; see {out_dir}/train.txt")
    print(f"done: {name}, seed {seed}", flush=True)


def train_all(data_dir, jobs, variants, seeds=SEEDS):
    """Every (variant, seed) run, `jobs` at a time; finished runs return at once, interrupted ones resume."""
    runs = [(name, config, extra, seed) for name, config, extra in variants for seed in seeds]
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(train_one, *run, data_dir) for run in runs]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # start no further run; the running ones stop by themselves
            raise


def tokens_to_reach(val_curve, target):
    """Tokens at which a validation curve [(tokens, loss)] first reaches target, linearly interpolated; None if never."""
    for (t0, l0), (t1, l1) in zip(val_curve, val_curve[1:]):
        if l1 <= target:
            return t1 if l0 == l1 else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def summarize(runs_by_variant):
    """Per variant: final val losses per seed, their mean and half-range, and tokens to reach the baseline's mean final loss."""
    target = np.mean([run["val"][-1][1] for run in runs_by_variant["baseline"]])
    rows = []
    for name, runs in runs_by_variant.items():
        finals = [run["val"][-1][1] for run in runs]
        reach = [tokens_to_reach(run["val"], target) for run in runs]
        config = runs[0]["config"]
        rows.append({
            "variant": name, "max_lr": config["max_lr"], "params": count_params(config),
            "tokens": runs[0]["val"][-1][0], "finals": finals, "mean": float(np.mean(finals)),
            "spread": float(np.ptp(finals) / 2), "reach": reach,
            "minutes": float(np.mean([run["elapsed_seconds"] for run in runs])) / 60,
        })
    return target, rows


def count_params(config):
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__})
    with torch.device("meta"):
        return GPT(cfg.model_config()).num_params()


def machines(runs_by_variant):
    """The machines the runs trained on, as their config.json says: one, or each with its variants."""
    variants_by_machine = {}
    for name, runs in runs_by_variant.items():
        for run in runs:
            variants_by_machine.setdefault(run["config"].get("hardware", "hardware not recorded"), {})[name] = None
    if len(variants_by_machine) == 1:
        return next(iter(variants_by_machine))
    return "; ".join(f"{machine} ({', '.join(names)})" for machine, names in variants_by_machine.items())


def markdown_table(target, rows, hardware, text="Tiny Shakespeare", seeds=SEEDS, trained="date not recorded"):
    """The table, headed by what it measured, on which machine, trained when (the runs' dates, not the table's)."""
    lines = [f"{text}, {rows[0]['tokens']:,} training tokens per run, seeds {list(seeds)}, "
             f"{hardware}, trained {trained}. Val loss: mean ± half the spread of the seeds. "
             f"'Reaches baseline' is the tokens at which the run's val loss first reaches the baseline's mean final "
             f"loss ({target:.3f}), per seed.", "",
             "| variant | max_lr | parameters | final val loss | per seed | reaches baseline at | minutes/run |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        reach = ", ".join("never" if t is None else f"{t / r['tokens']:.0%}" for t in r["reach"])
        lines.append(f"| {r['variant']} | {r['max_lr']:g} | {r['params']:,} | {r['mean']:.3f} ± {r['spread']:.3f} | "
                     f"{', '.join(f'{f:.3f}' for f in r['finals'])} | {reach} | {r['minutes']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_ablation(runs_by_variant, target, path, seeds=SEEDS):
    """
    Mean validation loss against tokens per variant, the seeds' range shaded, the baseline's final loss dashed:
    the whole runs from where they start (the untrained ~10.8), and beside them the last half, where they differ.
    """
    fig, (ax_all, ax_end) = plotting.plt.subplots(1, 2, figsize=(13, 6))
    last_tokens = max(t for runs in runs_by_variant.values() for t, _ in runs[0]["val"])
    for i, (name, runs) in enumerate(runs_by_variant.items()):
        tokens = np.array([t for t, _ in runs[0]["val"]])
        losses = np.array([[loss for _, loss in run["val"]] for run in runs])  # (seeds, evals)
        label = f"{name} ({plotting.describe_variant(runs[0]['config'])}): {losses[:, -1].mean():.3f}"
        for ax, keep in ((ax_all, tokens >= 0), (ax_end, tokens >= last_tokens / 2)):
            ax.plot(tokens[keep], losses.mean(0)[keep], "o-", markersize=3, color=f"C{i}", label=label)
            ax.fill_between(tokens[keep], losses.min(0)[keep], losses.max(0)[keep], color=f"C{i}", alpha=0.2)
    for ax in (ax_all, ax_end):
        ax.axhline(target, color="black", linestyle="--", linewidth=1, label=f"baseline's final val loss: {target:.3f}")
        plotting.tokens_axis(ax)
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(alpha=0.3)
    ax_all.set_title("whole runs", fontsize=10)
    ax_end.set_title(f"second half (from {plotting.format_tokens(last_tokens / 2)} tokens)", fontsize=10)
    all_runs = [run for runs in runs_by_variant.values() for run in runs]
    what = f"mean of {len(seeds)} seeds, range shaded" if len(seeds) > 1 else f"seed {seeds[0]}"
    return plotting.finish(fig, f"CPU-scale ablation: {what}", all_runs, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train every variant at CPU scale and render the comparison.")
    parser.add_argument("--data_dir", default="data/shakespeare", help="token shards from prepare_data.py (default: data/shakespeare)")
    parser.add_argument("--out", default="media", help="folder for ablation_cpu.png and ablation_cpu.md (default: media)")
    parser.add_argument("--report_only", action="store_true", help="train nothing; redraw from the runs in out/ablation_cpu")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one CPU thread each (default: 2)")
    parser.add_argument("--variants", default="", metavar="A,B",
                        help="train and report these variants only (baseline always: it sets the target); default: "
                             "--name's table (" + "; ".join(f"{name}: {', '.join(v)}" for name, v in TABLES.items()) +
                             "), or all for another name")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), metavar="0,1",
                        help=f"train and report these seeds only (default {','.join(map(str, SEEDS))})")
    parser.add_argument("--name", default="ablation_cpu", help="the file names written in --out (default ablation_cpu)")
    args = parser.parse_args(argv)
    try:
        seeds = tuple(int(seed) for seed in args.seeds.split(","))
        named = TABLES.get(args.name)
        chosen = set(args.variants.split(",")) | {"baseline"} if args.variants else set(named) if named else None
        unknown = chosen - {name for name, _, _ in VARIANTS} if chosen else set()
        if unknown:
            raise ValueError(f"no variant {', '.join(sorted(unknown))}; the variants: {', '.join(n for n, _, _ in VARIANTS)}")
        variants = [v for v in VARIANTS if chosen is None or v[0] in chosen]
        if not args.report_only:
            train_all(args.data_dir, args.jobs, variants, seeds)
        runs_by_variant = {name: [plotting.read_run(run_dir(name, seed)) for seed in seeds] for name, _, _ in variants}
        target, rows = summarize(runs_by_variant)
        data = plotting.dataset_name(runs_by_variant["baseline"][0]["config"].get("data_dir"))
        trained = plotting.dates([run for runs in runs_by_variant.values() for run in runs])
        table = markdown_table(target, rows, machines(runs_by_variant), plotting.TEXT_NAMES.get(data, data), seeds, trained)
        plot_ablation(runs_by_variant, target, os.path.join(args.out, args.name + ".png"), seeds)
        with open(os.path.join(args.out, args.name + ".md"), "w") as f:
            f.write(table)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C reached the runs too: each checkpointed its step
        print("stopped; run the same command to resume", file=sys.stderr)
        return 130
    print(table)
    print(f"wrote {os.path.join(args.out, args.name)}.png and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
