"""make gpu_check's dry path on the CPU (DEVICE=cpu): every step of the GPU check at a tiny shape, compiled,
through the Makefile target a GPU session runs, so that the first GPU session finds it working."""

import os
import subprocess

from measure import gpu_check
from test_train import REPO


def test_make_gpu_check_dry_path_runs_every_step_and_passes_its_checks(corpus, tmp_path):
    report = tmp_path / "gpu_check_cpu.md"
    media = os.path.join(REPO, "media", "gpu_check.md")
    before = os.path.getmtime(media) if os.path.exists(media) else None
    result = subprocess.run(["make", "-s", "gpu_check", "DEVICE=cpu", f"GPU_CHECK_DATA={corpus}",
                             f"GPU_CHECK_ARGS=--work_dir {tmp_path / 'runs'} --out {report}"],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = report.read_text()
    for section in ("### Throughput", "### Training", "### Sample", "### Speedrun", "### Checks"):
        assert section in text
    assert "`configs/baseline.py`" in text and "`configs/modern.py`" in text  # both rows of bench_train
    assert "| plain |" in text and "| checkpointed |" in text
    checks = [line for line in text.splitlines() if line.startswith(("- PASS", "- FAIL"))]
    assert len(checks) == 7 and all(line.startswith("- PASS") for line in checks), checks
    assert "DEVICE=cpu" in text and "no GPU" in text  # never passed off as a GPU's numbers
    # the committed GPU table is left alone by the dry path
    assert (os.path.getmtime(media) if os.path.exists(media) else None) == before


def test_missing_data_or_gpu_is_one_line(tmp_path, capsys):
    assert gpu_check.main(["--device=cpu", f"--data_dir={tmp_path / 'none'}", f"--work_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "make gpu_check_data" in err and err.count("\n") == 1
    import torch
    if not torch.cuda.is_available():
        assert gpu_check.main([f"--work_dir={tmp_path}"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and "DEVICE=cpu" in err and err.count("\n") == 1
