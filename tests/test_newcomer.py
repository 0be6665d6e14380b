"""
Specification of the newcomer's path: what `make setup` installs, where the CPU targets get their text,
the commands the README gives for several GPUs, and the README and docs/ themselves: one screen deep, every
link resolves, every command names a make target, a script, its flags and its configs that exist.

The Makefile's torch step runs for real on a copy of the Makefile, with a stand-in .venv/bin/python
that records the pip commands instead of installing (and a stand-in nvidia-smi for a GPU box);
get_text.py downloads through a file:// URL. CPU only, no network.

    python -m pytest -q tests/test_newcomer.py
"""

import ast
import contextlib
import functools
import glob
import hashlib
import importlib
import io
import os
import re
import shlex
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
    torchrun_lines = [line for page in PAGES for line in read(page).splitlines()
                      if "torchrun --" in line]  # the commands, not prose that names torchrun
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
    ([], "configs/demo_cpu.py", "out/demo_cpu/loss.png"),  # beside the run: the README's media/ copy stays as it is
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


# A stand-in .venv/bin/python for the data and training recipes: records each call; get_text.py finds Tiny Shakespeare
# unless $OFFLINE is set; prepare_data.py writes a manifest into its --out_dir, as the real one does.
FAKE_DATA_PYTHON = """#!/bin/sh
echo "$*" >> calls.txt
case "$1" in
  get_text.py) case "$2" in
    tinyshakespeare) [ -z "$OFFLINE" ] || exit 1; echo "$PWD/text/tinyshakespeare.txt" ;;
    pydoc) echo 'data/pydoc_text/*.txt' ;;
  esac ;;
  prepare_data.py) while [ $# -gt 0 ]; do [ "$1" = --out_dir ] && mkdir -p "$2" && echo '{}' > "$2/manifest.json"; shift; done ;;
esac
"""


@needs_make
@pytest.mark.parametrize("offline, quant_data", [(False, None), (True, "data/pydoc"), (True, None)])
def test_make_train_quant_cpu_prepares_its_text_then_trains_on_it(tmp_path, offline, quant_data):
    """docs/quantization.md's first command: Tiny Shakespeare (found or downloaded), or offline make demo's text when
    asked; offline without it, one line that says how, and no training on a folder that holds no shards."""
    for name in ("Makefile", "requirements.txt"):
        shutil.copy(os.path.join(REPO, name), tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text(FAKE_DATA_PYTHON)
    (tmp_path / ".venv" / "bin" / "python").chmod(0o755)
    (tmp_path / ".venv" / ".runtime").touch()  # set up already
    env = {**os.environ, "OFFLINE": "1" if offline else ""}
    result = subprocess.run(["make", "--no-print-directory", "train_quant_cpu"] + ([f"QUANT_DATA={quant_data}"] if quant_data else []),
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    if offline and quant_data is None:  # data_shakespeare fell back to the pydoc text: not what QUANT_DATA names
        assert result.returncode != 0 and "make train_quant_cpu bench_inference QUANT_DATA=data/pydoc" in result.stdout
        assert not any(c.startswith("train.py") for c in calls)
        return
    assert result.returncode == 0, result.stdout + result.stderr
    data = quant_data or "data/shakespeare"
    text = "data/pydoc_text/*.txt" if offline else str(tmp_path / "text" / "tinyshakespeare.txt")
    assert any(c.startswith(f"prepare_data.py --input {text} --out_dir {data}") for c in calls), calls
    assert calls[-1] == f"train.py configs/quant_cpu.py --data_dir={data}"


@needs_make
def test_make_plots_draws_the_gpu_variants_runs_and_no_cpu_run(tmp_path):
    shutil.copy(os.path.join(REPO, "Makefile"), tmp_path / "Makefile")
    for run in ("baseline", "demo_cpu", "demo_cpu_baseline", "quant_cpu", "modern", "swiglu_unfinished"):
        (tmp_path / "out" / run).mkdir(parents=True)
        (tmp_path / "out" / run / "log.jsonl").touch()
    (tmp_path / "out" / "ablation_cpu" / "modern_seed0").mkdir(parents=True)
    (tmp_path / "out" / "ablation_cpu" / "modern_seed0" / "log.jsonl").touch()

    def plots(*variables):
        result = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.runtime", "plots", *variables],
                                cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert plots() == ".venv/bin/python plot.py out/baseline/ out/modern/ --out media/"
    assert plots("PLOT_VARIANTS=quant_cpu") == ".venv/bin/python plot.py out/quant_cpu/ --out media/"  # when asked
    assert "no run of" in plots("PLOT_VARIANTS=gpt2_xl")

@pytest.mark.parametrize("module, extra", [("sample", []), ("eval_lm", ["--tasks", "piqa"]), ("export", ["out.bin"]),
                                           ("measure.bench_inference", []), ("eval_commonsense_qa", []), ("eval_hellaswag", [])])
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


# -----------------------------------------------------------------------------
# The README and docs/: one screen deep, every link resolves, every command is one that runs

PAGES = ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
SHELL_FENCES = {"", "bash", "sh", "shell"}  # ```python and ```text blocks are code and output, not commands
PYTHONS = {"python", "python3", ".venv/bin/python"}
C_PROGRAMS = {"./c/gpt": "c/run.c", "c/gpt": "c/run.c", "./c/gpt-server": "c/server.c", "c/gpt-server": "c/server.c"}
WRAPPERS = {"srun", "time", "nice", "exec"}  # run the command that follows them


def read(page):
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return f.read()


def split_markdown(text):
    """(prose lines, [(fence language, code lines)]): fenced code apart from the text around it."""
    prose, blocks, fence = [], [], None
    for line in text.splitlines():
        opening = re.match(r"\s*(```|~~~)\s*(\w*)", line)
        if fence is None and opening:
            fence, language, code = opening.group(1), opening.group(2).lower(), []
        elif fence is not None and line.strip().startswith(fence):
            blocks.append((language, code))
            fence = None
        elif fence is not None:
            code.append(line)
        else:
            prose.append(line)
    return prose, blocks


def github_slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(page):
    seen, slugs = {}, set()
    for line in split_markdown(read(page))[0]:
        if m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = github_slug(m.group(1))
            slugs.add(slug if slug not in seen else f"{slug}-{seen[slug]}")  # GitHub numbers repeated headings
            seen[slug] = seen.get(slug, 0) + 1
    return slugs


def links(page):
    """Every [text](target) and ![alt](target) of a page's prose; inline code holds no links."""
    prose = re.sub(r"`[^`\n]*`", "code", "\n".join(split_markdown(read(page))[0]))
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)


def shell_lines(page):
    """The command lines of a page: its shell code blocks (continuations joined, a leading `$ ` dropped) and
    the inline code of its prose that starts like a command."""
    prose, blocks = split_markdown(read(page))
    lines = []
    for language, code in blocks:
        if language in SHELL_FENCES:
            lines += [re.sub(r"^\$ ", "", line.strip()) for line in "\n".join(code).replace("\\\n", " ").splitlines()]
    for paragraph in "\n".join(prose).split("\n\n"):
        for span in re.findall(r"`([^`]+)`", paragraph.replace("\n", " ")):
            if re.match(r"(make|python3?|\.venv/bin/python|\./c/gpt\S*) ", span):
                lines.append(span)
    return [line for line in lines if line]


def simple_commands(line):
    """Each simple command of a shell line as its words: split at && || ; | ( ), comments dropped, leading
    VAR=value assignments and wrappers such as srun dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: prose, not a command
        return []
    commands, words = [], []
    for token in tokens + [";"]:
        if token and set(token) <= set("&|;()<>"):
            while words and (re.match(r"[A-Za-z_]\w*=", words[0]) or words[0] in WRAPPERS):
                words.pop(0)
            if words:
                commands.append(words)
            words = []
        else:
            words.append(token)
    return commands


def expand_braces(word):
    """configs/{a,b}.py -> configs/a.py configs/b.py, as the shell expands it."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    return [w for part in m.group(1).split(",") for w in expand_braces(word[:m.start()] + part + word[m.end():])] \
        if m else [word]


@functools.lru_cache(maxsize=None)
def makefile_targets_and_variables():
    text = read("Makefile")
    targets = set()
    for m in re.finditer(r"^([^\s#:=][^:=]*?)\s*:(?!=)", text, re.MULTILINE):
        targets.update(t for t in m.group(1).split() if not t.startswith("."))
    return targets, text


@functools.lru_cache(maxsize=None)
def script_flags(script):
    """The --flags a script's argparse takes, from its own --help run in this process (the imports are shared,
    so this costs little per script); with train.py's config keys where the script forwards --key=value."""
    module = importlib.import_module(script[:-3].replace("/", "."))  # measure/bench_c.py: measure.bench_c
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main(["--help"])
    help_text = out.getvalue()
    flags = set(re.findall(r"--[\w-]+", help_text.split("\n\n")[0]))  # the usage lines list every option
    flags |= {m for line in help_text.splitlines() if line.lstrip().startswith("-")
              for m in re.findall(r"--[\w-]+", re.split(r"\s{2,}", line.strip())[0])}
    flags |= {f"--{key}" for key in re.findall(r"^  (\w+) = ", help_text, re.MULTILINE)}  # train.py's keys
    if script != "train.py" and "parse_known_args" in read(script):  # overrides go on to train.py's config
        flags |= script_flags("train.py")
    return frozenset(flags)


@functools.lru_cache(maxsize=None)
def c_flags(source):
    return frozenset(re.findall(r'"(--?[A-Za-z][\w-]*)"', read(source)))


def command_problems(words):
    """What is wrong with one simple command, as sentences; [] when it is one that runs (or not ours to check)."""
    program, args = words[0], words[1:]
    problems = []
    if program == "make":
        targets, makefile = makefile_targets_and_variables()
        for arg in args:
            if m := re.match(r"([A-Za-z_]\w*)=", arg):
                if not re.search(rf"\b{m.group(1)}\b", makefile):
                    problems.append(f"make variable {m.group(1)} is not in the Makefile")
            elif not arg.startswith("-") and arg not in targets:
                problems.append(f"make target {arg} is not in the Makefile")
        return problems
    if program in C_PROGRAMS:
        flags = c_flags(C_PROGRAMS[program])
        return [f"{program} has no flag {arg}" for arg in args
                if re.match(r"--?[A-Za-z]", arg) and arg.split("=")[0] not in flags]
    if program in PYTHONS and args[:2] == ["-m", "pytest"]:
        program, args = "pytest", args[2:]
    if program == "pytest":
        return [f"{arg} does not exist" for arg in args if arg.startswith("tests/")
                and not os.path.exists(os.path.join(REPO, arg.split("::")[0]))]
    if program in PYTHONS and args[:1] == ["-m"] and len(args) > 1 and args[1].startswith("measure."):
        script, args = args[1].replace(".", "/") + ".py", args[2:]  # python -m measure.bench_c: measure/bench_c.py
    elif program in PYTHONS and args and not args[0].startswith("-"):
        script, args = args[0], args[1:]
    elif program.endswith("torchrun") and any(a.endswith(".py") for a in args):
        at = next(i for i, a in enumerate(args) if a.endswith(".py"))  # torchrun's own flags come before it
        script, args = args[at], args[at + 1:]
    else:
        return []  # git, curl, pip, lm_eval, ...: not this repository's commands
    if not os.path.isfile(os.path.join(REPO, script)):
        return [f"{script} does not exist"]
    flags = script_flags(script)
    for arg in args:
        flag = arg.strip("[]").split("=")[0]
        if flag.startswith("--") and flag not in flags:
            problems.append(f"{script} has no flag {flag}")
        for path in expand_braces(arg.split("=")[-1]):
            if re.match(r"(configs|tests)/[^*]+\.py$", path) and not os.path.isfile(os.path.join(REPO, path)):
                problems.append(f"{path} does not exist")
    return problems


@pytest.mark.parametrize("page", PAGES)
def test_every_link_and_picture_resolves_to_a_file_and_its_heading(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not a file of the repository
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(REPO, os.path.dirname(page), path)) if path else os.path.join(REPO, page)
        if not resolved.startswith(REPO + os.sep) or not os.path.exists(resolved):
            broken.append(f"{target}: no such file")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(os.path.relpath(resolved, REPO)):
            broken.append(f"{target}: no heading with the anchor #{anchor}")
    assert not broken, f"{page}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES)
def test_every_command_names_a_make_target_a_script_its_flags_and_configs_that_exist(page):
    problems = [f"`{line}`: {problem}" for line in shell_lines(page)
                for words in simple_commands(line) for problem in command_problems(words)]
    assert not problems, f"{page}:\n" + "\n".join(problems)


def test_the_checker_sees_the_commands_it_checks():
    # a check that found no commands would pass on anything: each kind of command is seen somewhere
    programs = {words[0] for page in PAGES for line in shell_lines(page) for words in simple_commands(line)}
    assert {"make", "python", ".venv/bin/python", ".venv/bin/torchrun", "./c/gpt", "./c/gpt-server"} <= programs
    assert command_problems(["python", "train.py", "configs/baseline.py", "--no_such_flag=1"]) == \
        ["train.py has no flag --no_such_flag"]
    assert command_problems(["make", "train_nothing", "NO_SUCH_VARIABLE=1"]) == \
        ["make target train_nothing is not in the Makefile", "make variable NO_SUCH_VARIABLE is not in the Makefile"]
    assert command_problems(["python", "-m", "measure.estimate", "configs/{baseline,nothing}.py", "--batch_size=8"]) == \
        ["configs/nothing.py does not exist"]
    assert command_problems(["python", "-m", "measure.bench_nothing"]) == ["measure/bench_nothing.py does not exist"]
    assert command_problems(["python", "-m", "measure.bench_c", "--no_such_flag"]) == \
        ["measure/bench_c.py has no flag --no_such_flag"]
    assert command_problems(["./c/gpt", "model.bin", "-p", "Hi", "--no_such_flag"]) == ["./c/gpt has no flag --no_such_flag"]
    assert simple_commands("A=1 make demo DEMO=baseline && python x.py --y  # a comment") == \
        [["make", "demo", "DEMO=baseline"], ["python", "x.py", "--y"]]
    assert github_slug("Knowing before paying: `--dry_run`") == "knowing-before-paying---dry_run"


def test_the_readme_fits_one_screen_of_commands_and_links_every_docs_page():
    readme = read("README.md")
    lines = readme.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the depth belongs in docs/"
    first_screen = "\n".join(lines[:60])
    assert "make demo" in first_screen and "make test" in first_screen
    assert re.search(r"^#+ On a rented GPU\s*$", first_screen, re.MULTILINE)
    linked = {os.path.normpath(target.partition("#")[0]) for target in links("README.md")}
    assert [page for page in PAGES[1:] if page not in linked] == []


@pytest.mark.parametrize("page", PAGES[1:])
def test_every_docs_page_opens_with_its_commands(page):
    headings = [line for line in split_markdown(read(page))[0] if line.startswith("#")]
    assert headings[0].startswith("# ") and headings[1] == "## Commands", f"{page}: {headings[:2]}"
    after = read(page).split("## Commands\n", 1)[1].lstrip("\n")
    assert after.startswith("```bash\n"), f"{page}: the Commands heading is not followed by a bash block"


def test_the_readme_labels_every_gpu_hour_and_dollar_as_an_estimate():
    # no GPU run has been recorded: a figure of time or money for one is an estimate until it is measured
    blocks = split_markdown(read("README.md"))[1]
    costed = [line for language, code in blocks if language in SHELL_FENCES for line in code
              if re.search(r"\$\d|\d h\b", line)]
    assert costed and all("estimate" in line or "on paper" in line for line in costed), costed


def test_the_readmes_tree_names_every_program_and_library_file_with_its_purpose():
    readme = read("README.md")
    tree = readme.split("## The files", 1)[1].split("\n## ", 1)[0].split("```text\n", 1)[1].split("```", 1)[0]
    files = sorted(os.path.relpath(p, REPO) for folder in ("", "cheapgpt2", "measure")
                   for p in glob.glob(os.path.join(REPO, folder, "*.py")))
    described = {line.split()[0]: line.split(None, 1)[1:] for line in tree.splitlines() if line.split()}
    missing = [f for f in files if os.path.basename(f) not in described]
    assert missing == [], f"not in the README's tree: {missing}"
    assert all(described[os.path.basename(f)] for f in files), "a file in the tree without its line of purpose"


def test_the_programs_import_only_the_library_and_the_library_no_program():
    """The layout the README's tree shows: the programs (top level, measure/) import cheapgpt2, never each other;
    cheapgpt2 imports nothing of theirs and has no program in it."""
    programs = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "*.py"))}
    programs |= {"measure"} | {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "measure", "*.py"))}
    problems = []
    for path in sorted(glob.glob(os.path.join(REPO, "*.py")) + glob.glob(os.path.join(REPO, "measure", "*.py"))
                       + glob.glob(os.path.join(REPO, "cheapgpt2", "*.py"))):
        name, text = os.path.relpath(path, REPO), read(os.path.relpath(path, REPO))
        for node in ast.walk(ast.parse(text)):  # the code's imports, not an import written in a string
            imported = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                        [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            problems += [f"{name} imports the program {m}" for m in imported if m.split(".")[0] in programs]
        if name.startswith("cheapgpt2/") and "__main__" in text:
            problems.append(f"{name} is a program (it has a __main__) inside the library")
    assert problems == []
    assert len(glob.glob(os.path.join(REPO, "*.py"))) <= 14, "the top level holds the programs a user runs by name"


# -----------------------------------------------------------------------------
# The figures: the README's results cite only what the media/ files they link hold, and every media/ file says
# on which machine and when its figures were measured

MEDIA_TABLES = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "media", "*.md")))
# a CPU's or GPU's model name, as /proc/cpuinfo and nvidia-smi give it
MACHINE = re.compile(r"AMD EPYC|AMD Ryzen|Intel|Xeon|Apple M\d|Graviton|Neoverse|NVIDIA|[AHBL]\d{2,3}\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
# a figure in prose: 6.354, 1,221, 18%, 0.93x or 0.93×; not the digits of q8_0, fp32, 124M or a date
FIGURE = re.compile(r"(?<![\w.,/-])\d(?:[\d,]*\d)?(?:\.\d+)?(?:e[-+]\d+)?(?=[x×%]?(?![\w-]))")


def figures(text, strict=True):
    """The numbers of a text, thousands separators dropped; strict: only those that stand as figures."""
    pattern = FIGURE if strict else re.compile(r"\d(?:[\d,]*\d)?(?:\.\d+)?(?:e[-+]\d+)?")
    return {m.group(0).replace(",", "") for m in pattern.finditer(re.sub(r"\]\([^)]*\)", "]", text))}


def results_rows():
    """The README's results table: (what, result, measured) per row."""
    section = read("README.md").split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = [tuple(cell.strip() for cell in line.strip().strip("|").split(" | "))
            for line in section.splitlines() if line.startswith("| ")]
    assert rows[0] == ("what", "result", "measured"), rows[0]
    return rows[1:]


def media_problems(row):
    """What is wrong with one results row, as sentences: a figure absent from the media/ files it links, no
    media/ file to hold its figures, or no machine and date for them."""
    what, result, measured = row
    if result.startswith("not measured") or measured.startswith("published"):
        return []
    cited = re.findall(r"\]\((media/[^)#\s]+\.md)\)", " | ".join(row))
    if not cited:
        return [f"{what}: no media/*.md linked to hold its figures"]
    problems = [f"{what}: {path} does not exist" for path in cited if not os.path.isfile(os.path.join(REPO, path))]
    held = set().union(*(figures(read(path), strict=False) for path in cited if path not in " ".join(problems)))
    problems += [f"{what}: {figure} is not in {', '.join(cited)}" for figure in sorted(figures(result) - held)]
    if not (MACHINE.search(measured) and DATE.search(measured)):
        problems.append(f"{what}: the measured column names no machine and date")
    return problems


def test_the_readmes_results_cite_only_figures_that_the_media_files_they_link_hold():
    rows = results_rows()
    assert sum(1 for row in rows if re.search(r"\]\(media/", row[2])) >= 6  # the check sees the rows it checks
    problems = [problem for row in rows for problem in media_problems(row)]
    assert not problems, "\n".join(problems)


def test_the_results_check_catches_a_figure_its_file_does_not_hold():
    row = ("`make demo`", "val loss 10.83 to 4.99 in 100 steps", "2026-12-04, Intel Xeon: [figures](media/demo_loss.md)")
    assert media_problems(row) == ["`make demo`: 4.99 is not in media/demo_loss.md"]
    assert media_problems(("C engine", "decode 186.8 tok/s", "2026-11-26, CPU ([docs](docs/c_engine.md))")) == \
        ["C engine: no media/*.md linked to hold its figures"]
    assert figures("fp32 and q8_0: 0.93× and 1.41x, 18% of 1,221 on 2026-12-04 at 124M") == {"0.93", "1.41", "18", "1221"}
    assert figures("within 1.3e-05, then 2.9e-06") == {"1.3e-05", "2.9e-06"}


# an instruction set as cheapgpt2/common.py's instruction_set() names it, or a GPU
INSTRUCTION_SET = re.compile(r"AVX2|AVX-512|NEON|SVE|no SIMD|NVIDIA|[AHBL]\d{2,3}\b")
# Written before the programs named the instruction set, from logs no longer here: each is redone by its command
# (hours of training), and its header then names it. Until then the docs say which machine and no more.
WITHOUT_INSTRUCTION_SET = {"media/ablation_cpu.md": "make ablation_cpu", "media/ablation_speedrun.md": "make ablation_cpu"}


@pytest.mark.parametrize("path", MEDIA_TABLES)
def test_every_media_table_names_its_machine_instruction_set_and_date_above_it(path):
    header = read(path).split("\n|", 1)[0]  # the text before the first table
    assert MACHINE.search(header), f"{path}: no CPU or GPU named above its table"
    assert DATE.search(header), f"{path}: no date (YYYY-MM-DD) above its table"
    assert INSTRUCTION_SET.search(header) or path in WITHOUT_INSTRUCTION_SET, f"{path}: no instruction set above its table"


def docs_tables(text):
    """(the media/*.md files a table cites, its body rows) for every table of a page: a table cites the files
    linked in its cells or in the paragraph just above it."""
    lines, tables, at = split_markdown(text)[0], [], 0
    while at < len(lines):
        if not lines[at].startswith("|"):
            at += 1
            continue
        end = at
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        above = at - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        paragraph = []
        while above >= 0 and lines[above].strip() and not lines[above].startswith("|"):
            paragraph.insert(0, lines[above])
            above -= 1
        cited = re.findall(r"\]\(\.\./(media/[^)#\s]+\.md)\)", " ".join(paragraph + lines[at:end]))
        tables.append((sorted(set(cited)), lines[at + 2:end]))  # the header and separator rows are not figures
        at = end
    return tables


def docs_table_problems(page, text):
    """Each figure of a docs/ table that cites media/ files but is not in them, as a sentence."""
    problems = []
    for cited, rows in docs_tables(text):
        missing = [path for path in cited if not os.path.isfile(os.path.join(REPO, path))]
        problems += [f"{page}: {path} does not exist" for path in missing]
        held = set().union(*(figures(read(path), strict=False) for path in cited if path not in missing))
        for row in rows:
            problems += [f"{page}: {figure} ({row[:60]}...) is not in {', '.join(cited)}"
                         for figure in sorted(figures(row) - held)] if cited else []
    return problems


def test_every_figure_of_a_docs_table_that_cites_a_media_file_is_in_it():
    pages = [page for page in PAGES if page.startswith("docs/")]
    cited = [table for page in pages for table in docs_tables(read(page)) if table[0]]
    assert len(cited) >= 3  # the check sees the tables it checks
    problems = [problem for page in pages for problem in docs_table_problems(page, read(page))]
    assert not problems, "\n".join(problems)


def test_the_docs_table_check_catches_a_figure_its_file_does_not_hold():
    page = ("Some text.\n\nFrom [media/demo_loss.md](../media/demo_loss.md):\n\n| | tokens | loss |\n|---|---:|---:|\n"
            "| first | 0 | 10.83 |\n| last | 204,800 | 4.99 |\n\nLater text.\n\n| a | b |\n|---|---|\n| 1.5 | 7 |\n")
    assert docs_table_problems("x.md", page) == ["x.md: 4.99 (| last | 204,800 | 4.99 |...) is not in media/demo_loss.md"]
    assert [cited for cited, _ in docs_tables(page)] == [["media/demo_loss.md"], []]  # the second cites nothing


VENV_PROGRAMS = {"python", "python3", "pip", "pip3", "pytest", "lm_eval", "torchrun"}


@pytest.mark.parametrize("page", PAGES)
def test_every_python_command_runs_the_venvs_python(page):
    """After `make setup` or `make demo` the packages are in .venv: a bare `python` on a system Python finds no torch.
    A page says `.venv/bin/python`, or `source .venv/bin/activate` once before its commands."""
    lines = shell_lines(page)
    activated = any(words == ["source", ".venv/bin/activate"] for line in lines for words in simple_commands(line))
    bare = [line for line in lines for words in simple_commands(line) if words[0] in VENV_PROGRAMS]
    assert activated or not bare, f"{page}: runs outside .venv: {bare}"
