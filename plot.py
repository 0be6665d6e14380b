"""
Pictures and tables for media/ from the runs train.py logged (out_dir/log.jsonl and out_dir/config.json).

    python plot.py out/baseline out/increase_max_lr out/rotational_pos_emb out/swiglu --out media/
    make plots                                            # every run in out/ except the CPU demo
    python plot.py out/demo_cpu --loss_curve media/demo_loss.png   # and its figures: media/demo_loss.md

The comparison writes media/convergence_comparison.png (validation loss against tokens seen),
media/commonsense_qa.png (CommonsenseQA accuracy against tokens seen, when a run logged csqa_acc),
and media/summary.md + summary.csv (one row per run). Runs whose files are missing or empty are
named on stderr and left out; the exit code is 1 only when no run could be read. Every table names the
machine (each run's config.json) and the date each run finished training (its checkpoint's last write).
"""

import argparse
import os
import sys

from cheapgpt2.common import write_atomically
from cheapgpt2.plotting import (GPT2_124M_CSQA_ACC, dataset_name, loss_curve_markdown, plot_commonsense_qa,
                                plot_convergence, plot_loss_curve, read_run, summary_rows, write_summary)


def compare_runs(run_dirs, out_dir, gpt2_csqa_acc=GPT2_124M_CSQA_ACC):
    """Read every run (naming and skipping the unreadable ones), write the pictures and the summary; 0 or 1."""
    runs = []
    for run_dir in run_dirs:
        try:
            runs.append(read_run(run_dir))
        except (ValueError, FileNotFoundError) as e:
            print(f"skipping {run_dir}: {e}", file=sys.stderr)
    if not runs:
        print("error: no run could be read; train one first (make train_baseline, or make demo on a CPU)", file=sys.stderr)
        return 1
    if len({dataset_name(run["config"].get("data_dir")) for run in runs}) > 1:
        print("warning: the runs were trained on different data; their losses are not comparable", file=sys.stderr)

    with_val = [run for run in runs if run["val"]]
    for run in runs:
        if not run["val"]:
            print(f"{run['name']}: no val_loss in its log.jsonl yet; left out of convergence_comparison.png", file=sys.stderr)
    if with_val:
        path = os.path.join(out_dir, "convergence_comparison.png")
        plot_convergence(with_val, path)
        print(f"wrote {path}")
    path = os.path.join(out_dir, "commonsense_qa.png")
    if plot_commonsense_qa(runs, path, gpt2_csqa_acc) is None:
        print(f"no run logged csqa_acc (CommonsenseQA evaluations); {path} not written", file=sys.stderr)
    else:
        print(f"wrote {path}")
    print(write_summary(summary_rows(runs), out_dir), end="")
    print(f"wrote {os.path.join(out_dir, 'summary.md')} and summary.csv")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="Render training logs into PNG pictures and a summary table.",
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="out_dir folders that train.py wrote (log.jsonl + config.json)")
    parser.add_argument("--out", default="media", help="folder for the comparison pictures and summary.md/.csv (default media)")
    parser.add_argument("--loss_curve", metavar="PNG", help="instead: write one run's train/val loss curve to this PNG")
    parser.add_argument("--gpt2_csqa_acc", type=float, default=GPT2_124M_CSQA_ACC, metavar="ACC",
                        help="GPT-2 124M's CommonsenseQA accuracy, 0-1, to draw dashed; default: 28.26%% for runs that logged "
                             "the plain format, none for the others (eval_commonsense_qa.py --hf gpt2 measures it)")
    args = parser.parse_args(argv)
    if args.gpt2_csqa_acc is not None and not 0 <= args.gpt2_csqa_acc <= 1:
        print(f"error: --gpt2_csqa_acc {args.gpt2_csqa_acc} is not a fraction; pass accuracy as 0-1 (0.25, not 25)", file=sys.stderr)
        return 1
    if not args.runs:
        print("error: no run folders given; pass out_dir folders (make plots passes those in out/)", file=sys.stderr)
        return 1
    if args.loss_curve is None:
        return compare_runs(args.runs, args.out, args.gpt2_csqa_acc)
    try:
        if len(args.runs) != 1:
            raise ValueError("--loss_curve draws one run; pass exactly one out_dir")
        run = read_run(args.runs[0])
        plot_loss_curve(run, args.loss_curve)
        figures = os.path.splitext(args.loss_curve)[0] + ".md"
        write_atomically(figures, loss_curve_markdown(run, f"python plot.py {args.runs[0]} --loss_curve {args.loss_curve}"))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.loss_curve} and {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
