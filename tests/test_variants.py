"""variants.py: the README's variants table comes from the config files."""

from measure import variants


def test_variants_table_counts_parameters_from_the_configs(capsys):
    assert variants.main(["configs/baseline.py", "configs/swiglu.py"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 4
    assert "learned pos, gelu MLP" in rows[2] and rows[2].endswith("| 3.00B | 124,475,904 |")
    assert "rope pos, swiglu MLP" in rows[3] and rows[3].endswith("| 123,701,760 |")


def test_a_bad_config_is_one_line(capsys, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("mlp = 'moe'\n")
    assert variants.main([str(path)]) == 1
    assert capsys.readouterr().err.startswith("error: GPTConfig: mlp must be")
