"""ablation_cpu.py's arithmetic on synthetic curves: what the README's ablation table reports."""

import datetime

import pytest

from measure import ablation_cpu


def test_tokens_to_reach_interpolates_between_evaluations():
    curve = [(0, 10.0), (100, 6.0), (200, 4.0), (300, 3.0)]
    assert ablation_cpu.tokens_to_reach(curve, 5.0) == pytest.approx(150)
    assert ablation_cpu.tokens_to_reach(curve, 6.0) == 100
    assert ablation_cpu.tokens_to_reach(curve, 2.0) is None


def fake_run(finals, max_lr=6e-4, minutes=2.0):
    config = {"max_lr": max_lr, "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "hardware": "test"}
    return {"config": config, "val": [(0, 10.0), (50, 6.0), (100, finals)], "elapsed_seconds": minutes * 60}


def test_summary_reports_mean_spread_and_when_each_seed_reaches_the_baseline():
    runs = {"baseline": [fake_run(5.0), fake_run(5.2)], "better": [fake_run(4.0, max_lr=1.8e-3), fake_run(4.2, max_lr=1.8e-3)]}
    target, rows = ablation_cpu.summarize(runs)
    assert target == pytest.approx(5.1)
    baseline, better = rows
    assert (baseline["mean"], baseline["spread"]) == (pytest.approx(5.1), pytest.approx(0.1))
    assert baseline["reach"] == [pytest.approx(95), None]  # 5.1 is 90% of the way from 6.0 to 5.0; the worse seed never gets there
    assert better["reach"][0] == pytest.approx(50 + 50 * (6.0 - 5.1) / 2.0)
    table = ablation_cpu.markdown_table(target, rows, "test hardware")
    assert "| better | 0.0018 |" in table and "4.100 ± 0.100" in table and "never" in table


def test_ablation_picture_shows_where_the_curves_start_and_zooms_on_the_second_half(tmp_path):
    runs = {"baseline": [fake_run(5.0), fake_run(5.2)], "better": [fake_run(4.0, max_lr=1.8e-3), fake_run(4.2, max_lr=1.8e-3)]}
    for variant in runs.values():
        for run in variant:
            run["val"][0] = (0, 10.83)  # the untrained model: uniform over GPT-2's padded vocabulary
    target, _ = ablation_cpu.summarize(runs)
    fig = ablation_cpu.plot_ablation(runs, target, str(tmp_path / "ablation.png"))
    whole, second_half = fig.axes[:2]
    assert whole.get_ylim()[0] < 4.0 and whole.get_ylim()[1] > 10.83  # every curve from its first evaluation
    assert [list(line.get_xdata()) for line in second_half.get_lines() if line.get_linestyle() != "--"] == [[50, 100]] * 2
    assert second_half.get_ylim()[1] < 10  # the zoom, where the variants differ


def test_table_names_the_text_the_runs_trained_on():
    runs = {"baseline": [fake_run(5.0), fake_run(5.2)]}
    target, rows = ablation_cpu.summarize(runs)
    assert ablation_cpu.markdown_table(target, rows, "test hardware").startswith("Tiny Shakespeare, ")
    assert ablation_cpu.markdown_table(target, rows, "test hardware", "Python's help() text").startswith("Python's help() text, ")


def test_an_unknown_variant_is_one_line_naming_the_variants(capsys):
    assert ablation_cpu.main(["--variants", "speedrun,nope", "--report_only"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no variant nope") and "speedrun_no_value_embeds" in err and err.count("\n") == 1


def test_the_table_is_dated_by_when_its_runs_trained_and_names_each_machine():
    # rendered again later (--report_only) or on another machine, the header still says where and when they ran
    runs = {"baseline": [fake_run(5.0), fake_run(5.2)], "modern": [fake_run(4.0), fake_run(4.2)]}
    for run in runs["modern"]:
        run["config"] = {**run["config"], "hardware": "CPU, 2 cores (Intel Xeon)"}
    target, rows = ablation_cpu.summarize(runs)
    table = ablation_cpu.markdown_table(target, rows, ablation_cpu.machines(runs), trained="2025-01-02 to 2025-01-05")
    assert "seeds [0, 1], test (baseline); CPU, 2 cores (Intel Xeon) (modern), trained 2025-01-02 to 2025-01-05." in table
    assert datetime.date.today().isoformat() not in table
    assert ablation_cpu.machines({"baseline": runs["baseline"]}) == "test"


@pytest.mark.parametrize("name", ["ablation_cpu", "ablation_speedrun"])
def test_report_only_redraws_each_committed_table_from_its_own_runs(tmp_path, monkeypatch, capsys, name):
    """The README's 6-row table is redrawn with its 6 variants (not all 12), and needs only their runs."""
    read = []
    monkeypatch.setattr(ablation_cpu.plotting, "read_run", lambda path: read.append(path) or fake_run(5.0))
    monkeypatch.setattr(ablation_cpu.plotting, "dates", lambda runs: "2025-01-02")
    assert ablation_cpu.main(["--report_only", "--name", name, "--out", str(tmp_path)]) == 0
    table = (tmp_path / f"{name}.md").read_text()
    variants = [line.split(" | ")[0][2:] for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert variants == ablation_cpu.TABLES[name]
    assert len(read) == 2 * len(ablation_cpu.TABLES[name])  # two seeds of each: no other run was looked for
