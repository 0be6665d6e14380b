"""
Specification of the newcomer's path: what `make setup` installs, where the CPU targets get their text,
and the commands the README gives for several GPUs.

The Makefile's torch step runs for real on a copy of the Makefile, with a stand-in .venv/bin/python
that records the pip commands instead of installing (and a stand-in nvidia-smi for a GPU box);
get_text.py downloads through a file:// URL. CPU only, no network.

    python -m pytest -q tests/test_newcomer.py
"""

import hashlib
import importlib
import os
import shutil
import signal
import subprocess

import pytest

import get_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data")
SHAKESPEARE = os.path.join(SHARED, "tinyshakespeare.txt")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

# Records every call; "-c" is the Makefile's is-torch-installed check, answered by $TORCH_INSTALLED.
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$CALLS"
case "$1" in
  -c) [ "$TORCH_INSTALLED" = 1 ] ;;
  -m) case "$*" in *--index-url*) [ "$CPU_INDEX_REACHABLE" = 1 ] ;; esac ;;
esac
"""


def make_setup(tmp_path, gpu, torch_installed=False, cpu_index_reachable=True):
    """Run the Makefile's setup recipe with a stand-in python; return (pip commands, make's output)."""
    for name in ("Makefile", "requirements.txt"):
        shutil.copy(os.path.join(REPO, name), tmp_path / name)
    venv_bin, fake_bin = tmp_path / ".venv" / "bin", tmp_path / "fake_bin"
    venv_bin.mkdir(parents=True)
    fake_bin.mkdir()
    (venv_bin / "python").write_text(FAKE_PYTHON)
    (venv_bin / "python").chmod(0o755)
    if gpu:
        (fake_bin / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3'\n")
        (fake_bin / "nvidia-smi").chmod(0o755)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls.txt"),
           "TORCH_INSTALLED": str(int(torch_installed)), "CPU_INDEX_REACHABLE": str(int(cpu_index_reachable))}
    result = subprocess.run(["make", "--no-print-directory", ".venv/.runtime"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    return [c for c in calls if c.startswith("-m pip install")], result.stdout


@needs_make
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA GPU")
def test_setup_without_nvidia_gpu_installs_pytorchs_cpu_build(tmp_path):
    pips, output = make_setup(tmp_path, gpu=False)
    # pinned: an unreachable index does not make pip fail, it takes the newest torch elsewhere (a CUDA build here)
    assert pips[0] == "-m pip install --timeout 15 --retries 1 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
    assert pips[1:] == ["-m pip install -r requirements.txt"]  # its torch>=2.7 is then satisfied: nothing more
    assert "setup: no NVIDIA GPU (no nvidia-smi): installing PyTorch's CPU build" in output


@needs_make
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA GPU")
def test_setup_falls_back_to_what_pip_finds_when_pytorchs_index_cannot_be_reached(tmp_path):
    pips, output = make_setup(tmp_path, gpu=False, cpu_index_reachable=False)
    assert pips == ["-m pip install --timeout 15 --retries 1 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0",
                    "-m pip install torch==2.13.0", "-m pip install -r requirements.txt"]
    assert "https://download.pytorch.org/whl/cpu could not be used: installing the torch 2.13.0 that pip finds" in output


@needs_make
def test_setup_on_a_gpu_box_installs_the_cuda_build_from_pypi(tmp_path):
    pips, output = make_setup(tmp_path, gpu=True)
    # the version the suite was last run with, not the newest CUDA build pip would pick
    assert pips == ["-m pip install torch==2.13.0", "-m pip install -r requirements.txt"]
    assert "NVIDIA GPU found" in output


@needs_make
@pytest.mark.parametrize("gpu", [False, True])
def test_setup_keeps_an_installed_torch(tmp_path, gpu):
    pips, output = make_setup(tmp_path, gpu=gpu, torch_installed=True)
    assert pips == ["-m pip install -r requirements.txt"]
    assert "torch is already installed" in output


def test_ci_runs_exactly_the_readmes_test_command():
    with open(os.path.join(REPO, ".ci", "run")) as f:
        commands = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert not any("pip " in c or "torch" in c for c in commands)  # make setup alone chooses the torch build


@needs_make
def test_train_ddp_runs_the_venvs_torchrun_and_the_readme_says_so():
    result = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.runtime", "-o", ".venv/.dev", "train_ddp",
                             "CONFIG=configs/swiglu.py", "NPROC=4"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip().splitlines()[-1] == ".venv/bin/torchrun --standalone --nproc_per_node=4 train.py configs/swiglu.py"
    with open(os.path.join(REPO, "README.md")) as f:
        torchrun_lines = [line for line in f if "torchrun --" in line]  # the commands, not prose that names torchrun
    assert torchrun_lines and all(".venv/bin/torchrun " in line or "make train_ddp" in line for line in torchrun_lines)


# -----------------------------------------------------------------------------
# get_text.py: Tiny Shakespeare found, downloaded (checked), or not to be had


@pytest.mark.skipif(not os.path.exists(SHAKESPEARE), reason="needs ../shared/data/tinyshakespeare.txt beside the checkout")
def test_tinyshakespeare_sha256_is_that_of_the_shared_copy():
    with open(SHAKESPEARE, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == get_text.TINYSHAKESPEARE_SHA256


@pytest.mark.skipif(not os.path.exists(SHAKESPEARE), reason="needs ../shared/data/tinyshakespeare.txt beside the checkout")
def test_tinyshakespeare_is_taken_from_shared_data_else_downloaded_once(tmp_path, monkeypatch, capsys):
    assert get_text.main(["tinyshakespeare", "--shared", SHARED, "--out_dir", str(tmp_path / "text")]) == 0
    assert capsys.readouterr().out.strip() == os.path.normpath(SHAKESPEARE)
    assert not (tmp_path / "text").exists()  # used where it is, not copied

    monkeypatch.setattr(get_text, "TINYSHAKESPEARE_URL", f"file://{os.path.abspath(SHAKESPEARE)}")  # the "internet"
    argv = ["tinyshakespeare", "--shared", str(tmp_path / "no_shared"), "--out_dir", str(tmp_path / "text")]
    assert get_text.main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "text" / "tinyshakespeare.txt")
    assert err.startswith("tinyshakespeare: downloaded from file://") and "(sha256 checked)" in err
    assert (tmp_path / "text" / "tinyshakespeare.txt").read_bytes() == open(SHAKESPEARE, "rb").read()

    monkeypatch.setattr(get_text, "TINYSHAKESPEARE_URL", "file:///nowhere/offline.txt")
    assert get_text.main(argv) == 0  # the download is kept: no second one
    assert "downloaded earlier" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["offline", "wrong checksum", "shared copy is another text"])
def test_tinyshakespeare_that_cannot_be_had_is_one_line_and_nothing_kept(tmp_path, monkeypatch, capsys, case):
    (tmp_path / "other.txt").write_text("To be, or not to be: not quite the right text.\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    if case == "shared copy is another text":
        shutil.copy(tmp_path / "other.txt", shared / "tinyshakespeare.txt")
    url = {"offline": "file:///nowhere/offline.txt"}.get(case, f"file://{tmp_path}/other.txt")
    monkeypatch.setattr(get_text, "TINYSHAKESPEARE_URL", url)
    assert get_text.main(["tinyshakespeare", "--shared", str(shared), "--out_dir", str(tmp_path / "text")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    expected = {"offline": "could not download Tiny Shakespeare from file:///nowhere/offline.txt",
                "wrong checksum": "not Tiny Shakespeare's 86c4e6aa",
                "shared copy is another text": "tinyshakespeare.txt is not Tiny Shakespeare"}[case]
    assert expected in err
    assert not (tmp_path / "text").exists()


def test_pydoc_text_is_written_without_a_download(tmp_path, capsys):
    import pydoc_data.topics

    assert get_text.main(["pydoc", "--out_dir", str(tmp_path / "pydoc_text")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "pydoc_text" / "*.txt")
    assert len(os.listdir(tmp_path / "pydoc_text")) == len(pydoc_data.topics.topics)
    assert (tmp_path / "pydoc_text" / "for.txt").read_text() == pydoc_data.topics.topics["for"]


def test_standard_library_text_is_written_without_a_download(tmp_path, capsys):
    # make gpu_check's tokens: every top-level module of the running Python's standard library, byte for byte
    import glob
    import sysconfig

    assert get_text.main(["pystdlib", "--out_dir", str(tmp_path / "stdlib")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "stdlib" / "*.txt")
    stdlib = sysconfig.get_paths()["stdlib"]
    assert len(os.listdir(tmp_path / "stdlib")) == len(glob.glob(os.path.join(stdlib, "*.py"))) > 100
    with open(os.path.join(stdlib, "glob.py"), "rb") as f:
        assert (tmp_path / "stdlib" / "glob.txt").read_bytes() == f.read()
    assert not os.path.exists(tmp_path / "stdlib" / "json.txt")  # a package (a folder), not a top-level module


# -----------------------------------------------------------------------------
# make demo: the modern recipe by default, GPT-2's one flag away, both at the same scale


def test_demo_trains_the_modern_recipe_and_the_baseline_demo_the_same_model_size():
    import dataclasses

    import train

    def config(name):
        return dataclasses.asdict(train.load_config(os.path.join(REPO, "configs", name)))

    modern, demo, baseline_demo = config("modern.py"), config("demo_cpu.py"), config("demo_cpu_baseline.py")
    scale = {"out_dir", "data_dir", "device", "dtype", "compile", "block_size", "n_layer", "n_head", "n_embd", "batch_size",
             "total_batch_size", "max_steps", "warmup_steps", "eval_interval", "eval_tokens", "log_interval",
             "ckpt_interval", "sample_prompt", "sample_tokens", "gpu_hourly_cost", "csqa_data"}
    assert {k: v for k, v in demo.items() if k not in scale} == {k: v for k, v in modern.items() if k not in scale}
    assert demo["csqa_data"] == "" and demo["device"] == "cpu"  # no download, no GPU
    for key in ("data_dir", "block_size", "n_layer", "n_head", "n_embd", "batch_size"):
        assert demo[key] == baseline_demo[key], key
    assert baseline_demo["optimizer"] == "adamw" and baseline_demo["pos_emb"] == "learned"
    assert demo["out_dir"] != baseline_demo["out_dir"]


@needs_make
@pytest.mark.parametrize("flag, config, picture", [
    ([], "configs/demo_cpu.py", "media/demo_loss.png"),
    (["DEMO=baseline"], "configs/demo_cpu_baseline.py", "out/demo_cpu_baseline/loss.png"),
])
def test_make_demo_trains_then_draws_only_after_train_py_succeeded(flag, config, picture):
    result = subprocess.run(["make", "-n", "--no-print-directory", "-o", "data/pydoc/.prepared", "demo", *flag],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    train_line, plot_line = result.stdout.strip().splitlines()[-2:]
    assert train_line == f".venv/bin/python train.py {config}"
    assert plot_line.startswith(".venv/bin/python plot.py ") and plot_line.endswith(f"--loss_curve {picture}")
    # make runs the plot only if train.py exits 0; an interrupted run exits 130/143 (train.py), so nothing is redrawn


@needs_make
def test_ctrl_c_while_make_demo_prepares_its_data_keeps_the_manifest_and_the_rerun_continues(tmp_path):
    """make deletes the target of an interrupted recipe, and skips a target that exists: neither may be the manifest."""
    for name in ("Makefile", "requirements.txt"):
        shutil.copy(os.path.join(REPO, name), tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    fake_python = tmp_path / ".venv" / "bin" / "python"  # prepare_data.py: the manifest of a first shard, then busy
    fake_python.write_text('#!/bin/sh\necho "$*" >> calls.txt\ncase "$1" in prepare_data.py) mkdir -p data/pydoc; '
                           'echo "{}" > data/pydoc/manifest.json; echo started; [ -z "$BUSY" ] || exec sleep 60;; esac\n')
    fake_python.chmod(0o755)
    (tmp_path / ".venv" / ".runtime").touch()  # set up already
    make = subprocess.Popen(["make", "--no-print-directory", "demo"], cwd=tmp_path, text=True, env={**os.environ, "BUSY": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    for line in make.stdout:
        if line.strip() == "started":
            break
    os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal: make and its recipe
    output = make.communicate(timeout=30)[0]
    assert make.returncode != 0
    assert (tmp_path / "data" / "pydoc" / "manifest.json").exists(), output

    (tmp_path / "calls.txt").unlink()
    rerun = subprocess.run(["make", "--no-print-directory", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["get_text.py", "prepare_data.py", "train.py", "plot.py"]  # prepared again


@pytest.mark.parametrize("module, extra", [("sample", []), ("eval_lm", ["--tasks", "piqa"]), ("export", ["out.bin"]),
                                           ("bench_inference", []), ("eval_commonsense_qa", []), ("eval_hellaswag", [])])
@pytest.mark.parametrize("given", ["neither", "both"])
def test_every_model_command_wants_a_checkpoint_or_hf_but_not_both(module, extra, given, tmp_path, capsys, monkeypatch):
    """The commands that load a model share add_model_arguments: neither or both of checkpoint and --hf is one line."""
    monkeypatch.chdir(tmp_path)
    cli = importlib.import_module(module)
    model = ["ckpt.pt", "--hf", "gpt2"] if given == "both" else []
    assert cli.main(model[:1] + extra + model[1:]) == 1
    err = capsys.readouterr().err
    assert err == "error: give a checkpoint path or --hf ID_OR_DIR (exactly one of them)\n", err
    assert not (tmp_path / "out.bin").exists()
