"""bench_eval_served.py's table and its one-line errors (tests/test_lm_eval_server.py runs lm-eval's client through
the server itself)."""

import argparse
import json

from measure import bench_eval_served


def test_the_table_gives_each_way_its_time_and_accuracies_and_the_caches_speed_up(tmp_path):
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"results": {"csqa_cloze_local": {"acc,none": 0.172}, "csqa_mc_local": {"acc,none": 0.1957}}}))
    acc = bench_eval_served.accuracies(str(results))
    assert acc == {"cloze": 0.172, "mc": 0.1957}
    rows = [("`eval_lm.py` in process", 200.0, acc), ("served, with its prompt cache", 50.0, acc),
            ("served, without it (--no_prompt_cache)", 100.0, acc)]
    args = argparse.Namespace(checkpoint="out/demo_cpu/ckpt.pt", data="/x/commonsense_qa_validation.jsonl", limit=0, threads=2)
    table = bench_eval_served.markdown(rows, args)
    assert "| served, with its prompt cache | 50.0 | 17.20% | 19.57% | 0.25x |" in table
    assert "Served without the prompt cache / with it: 2.00x" in table
    assert table.startswith("`python -m measure.bench_eval_served out/demo_cpu/ckpt.pt --data commonsense_qa_validation.jsonl` on ")


def test_a_missing_checkpoint_or_data_is_one_line(tmp_path, capsys):
    assert bench_eval_served.main([str(tmp_path / "none.pt"), "--data", str(tmp_path / "none.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "none.pt" in err
