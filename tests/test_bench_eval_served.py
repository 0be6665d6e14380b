"""bench_eval_served.py's table and its one-line errors (tests/test_lm_eval_server.py runs lm-eval's client through
the server itself)."""

import argparse
import json

from measure import bench_eval_served


def test_the_table_gives_each_way_its_time_accuracies_and_differences(tmp_path):
    results = tmp_path / "r.json"
    # eval_lm.py's JSON: lm-eval's results with its samples (floats); lm_eval --log_samples: a jsonl per task (strings)
    in_process = {"csqa_cloze_local": [{"doc_id": 0, "filtered_resps": [[-3.5, False], [-2.0, True]]},
                                       {"doc_id": 1, "filtered_resps": [[-1.0, False], [-1.25, False]]}],
                  "csqa_mc_local": [{"doc_id": 0, "filtered_resps": [[-4.0, False], [-5.0, False]]}]}
    results.write_text(json.dumps({"results": {"csqa_cloze_local": {"acc,none": 0.172}, "csqa_mc_local": {"acc,none": 0.1957}},
                                   "samples": in_process}))
    acc = bench_eval_served.accuracies(str(results))
    assert acc == {"cloze": 0.172, "mc": 0.1957}
    reference = bench_eval_served.loglikelihoods(str(results))
    assert reference == {("cloze", 0): [-3.5, -2.0], ("cloze", 1): [-1.0, -1.25], ("mc", 0): [-4.0, -5.0]}
    served_dir = tmp_path / "served" / "davinci"
    served_dir.mkdir(parents=True)
    (served_dir / "samples_csqa_cloze_local_2026-12-06T14-00-00.000001.jsonl").write_text(
        json.dumps({"doc_id": 0, "filtered_resps": [["-3.5001", "False"], ["-2.0", "True"]]}) + "\n" +
        json.dumps({"doc_id": 1, "filtered_resps": [["-1.5", "False"], ["-1.25", "False"]]}) + "\n")  # answer changed
    (served_dir / "samples_csqa_mc_local_2026-12-06T14-00-00.000001.jsonl").write_text(
        json.dumps({"doc_id": 0, "filtered_resps": [["-4.0", "False"], ["-5.0", "False"]]}) + "\n")
    served = bench_eval_served.loglikelihoods(str(tmp_path / "served"))
    assert served[("cloze", 0)] == [-3.5001, -2.0]
    assert bench_eval_served.differences(served, reference) == {"cloze": (0.5, 1, 2), "mc": (0.0, 0, 1)}
    rows = [("`eval_lm.py` in process", 200.0, acc, reference), ("served, with its prompt cache", 50.0, acc, served),
            ("served, without it (--no_prompt_cache)", 100.0, acc, reference)]
    args = argparse.Namespace(checkpoint="out/demo_cpu/ckpt.pt", data="/x/commonsense_qa_validation.jsonl", limit=0, threads=2)
    table = bench_eval_served.markdown(rows, args)
    assert "| served, with its prompt cache | 50.0 | 17.20% | 19.57% | 5.0e-01, 0.0e+00 | 1 of 2, 0 of 1 | 0.25x |" in table
    assert "| `eval_lm.py` in process | 200.0 | 17.20% | 19.57% | — | — | 1.00x |" in table
    assert "Served without the prompt cache / with it: 2.00x" in table
    assert table.startswith("`python -m measure.bench_eval_served out/demo_cpu/ckpt.pt --data commonsense_qa_validation.jsonl` on ")


def test_a_missing_checkpoint_or_data_is_one_line(tmp_path, capsys):
    assert bench_eval_served.main([str(tmp_path / "none.pt"), "--data", str(tmp_path / "none.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "none.pt" in err
