"""
Pictures for media/ from the runs train.py logged (out_dir/log.jsonl and out_dir/config.json).

    python plot.py out/demo_cpu --loss_curve media/demo_loss.png
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on a rented GPU box or in CI
import matplotlib.pyplot as plt  # noqa: E402


def read_run(run_dir):
    """{name, config, train: [(tokens, loss)], val: [(tokens, loss)]} of one run, or a ValueError naming what is missing."""
    log_path, config_path = os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "config.json")
    for path in (log_path, config_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist; is {run_dir} an out_dir that train.py wrote?")
    with open(config_path) as f:
        config = json.load(f)
    with open(log_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise ValueError(f"{log_path} is empty: the run logged nothing yet")
    train = [(r["tokens"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["tokens"], r["val_loss"]) for r in records if "val_loss" in r]
    return {"name": os.path.basename(os.path.normpath(run_dir)), "config": config, "train": train, "val": val}


def plot_loss_curve(run, path):
    """Training and validation loss against tokens seen, for one run."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if run["train"]:
        ax.plot(*zip(*run["train"]), label="train loss", alpha=0.7)
    if run["val"]:
        ax.plot(*zip(*run["val"]), "o-", label="validation loss")
    cfg = run["config"]
    ax.set_title(f"{run['name']}: {cfg['n_layer']} layers, {cfg['n_embd']} wide, data {cfg['data_dir']}", fontsize=10)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.text(0.99, 0.01, f"hardware: {cfg.get('hardware', 'not recorded')}", ha="right", fontsize=7, color="gray")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description="Render training logs into PNG pictures.")
    parser.add_argument("runs", nargs="+", help="out_dir folders that train.py wrote (log.jsonl + config.json)")
    parser.add_argument("--loss_curve", required=True, help="write one run's train/val loss curve to this PNG")
    args = parser.parse_args(argv)
    try:
        if len(args.runs) != 1:
            raise ValueError("--loss_curve draws one run; pass exactly one out_dir")
        plot_loss_curve(read_run(args.runs[0]), args.loss_curve)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.loss_curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
