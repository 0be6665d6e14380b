"""train.py when things go wrong: no GPU, a diverging run, a full disk, bad files, signals. Each case must end
in one clear line (never a traceback) and leave a finished run's files as they were."""

import dataclasses
import errno
import os
import signal
import sys

import numpy as np
import pytest
import torch

import train
from cheapgpt2 import common, training
from cheapgpt2.checkpoint import load_checkpoint
from cheapgpt2.config import TrainConfig
from cheapgpt2.data import write_shard
from cheapgpt2 import training
from test_train import REPO, read_log, run


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, err
    return err


def test_cuda_under_torchrun_means_each_rank_its_own_gpu():
    assert common.pick_device("cuda", local_rank=3, ddp=True, cuda_available=True) == "cuda:3"
    assert common.pick_device("auto", local_rank=5, ddp=True, cuda_available=True) == "cuda:5"
    assert common.pick_device("cuda:1", local_rank=3, ddp=True, cuda_available=True) == "cuda:1"  # asked for
    assert common.pick_device("cuda", local_rank=0, ddp=False, cuda_available=True) == "cuda"
    assert common.pick_device("auto", local_rank=0, ddp=False, cuda_available=False) == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_config_without_cuda_is_one_line_and_writes_nothing(tmp_path, capsys):
    out_dir = tmp_path / "baseline"
    assert train.main([os.path.join(REPO, "configs", "baseline.py"), f"--out_dir={out_dir}"]) == 1
    err = one_error_line(capsys)
    assert "CUDA" in err and "--device=cpu forces the CPU" in err and "FLOPs per step" in err
    assert not out_dir.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_leaves_a_finished_run_alone(corpus, tmp_path, capsys):
    assert run(corpus, tmp_path, "--max_steps=2") == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("config.json", "log.jsonl", "ckpt.pt")}
    capsys.readouterr()
    assert run(corpus, tmp_path, "--max_steps=4", "--device=cuda") == 1
    assert "--device=cpu forces the CPU" in one_error_line(capsys)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_rng_state_holds_and_restores_only_this_process_gpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: calls.append(("get", device)) or torch.zeros(16, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append(("set", device)))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("saved every GPU's state"))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("restored every GPU's state"))
    state = training.rng_state("cuda:3")  # rank 3 of 8
    assert calls == [("get", "cuda:3")] and state["cuda"].shape == (16,)
    training.set_rng_state(state, "cuda:0")  # resumed on a machine with one GPU
    assert calls[-1] == ("set", "cuda:0")
    old_format = {**state, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 8}  # an 8-GPU checkpoint of before
    training.set_rng_state(old_format, "cuda:0")
    assert calls[-1] == ("set", "cuda:0")
    training.set_rng_state(state, "cpu")  # a CUDA checkpoint resumed on the CPU
    assert calls[-1] == ("set", "cuda:0")


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, capsys):
    assert run(corpus, tmp_path, "--max_steps=4", "--ckpt_interval=2") == 0
    good = (tmp_path / "ckpt.pt").read_bytes()
    capsys.readouterr()
    # an absurd learning rate without clipping: the weights blow up within a step or two
    assert run(corpus, tmp_path, "--max_steps=12", "--max_lr=1e12", "--grad_clip=0", "--log_interval=5",
               "--ckpt_interval=2") == 1
    err = one_error_line(capsys)
    assert "diverged at step" in err and "ckpt.pt (step 4) is kept" in err and "lower max_lr" in err
    assert (tmp_path / "ckpt.pt").read_bytes() == good
    assert not (tmp_path / "ckpt.pt.tmp").exists()


def test_cost_counts_wall_clock_since_launch_across_resumes(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "load_benchmarks", lambda cfg: {"csqa_acc": ([], "acc")})
    # every evaluation (at steps 0, 4, 8) takes half a second that the step time must not count and the cost must
    monkeypatch.setattr(train, "benchmark_accuracy", lambda *a, **k: __import__("time").sleep(0.5) or 0.25)
    monkeypatch.setattr(train, "LAUNCH_TIME", __import__("time").time())
    assert run(corpus, tmp_path, "--max_steps=4", "--gpu_hourly_cost=3.6") == 0
    first = [r for r in read_log(tmp_path) if "train_loss" in r][-1]
    assert first["elapsed_seconds"] >= first["train_seconds"] + 0.5  # the evaluation at step 0 at least
    assert first["dollars"] == pytest.approx(first["elapsed_seconds"] / 1000, rel=1e-3)  # $3.6/h = $0.001/s
    monkeypatch.setattr(train, "LAUNCH_TIME", __import__("time").time())
    assert run(corpus, tmp_path, "--max_steps=8", "--gpu_hourly_cost=3.6") == 0
    last = [r for r in read_log(tmp_path) if "train_loss" in r][-1]
    checkpoint = load_checkpoint(str(tmp_path / "ckpt.pt"))[1]
    # carried over, plus the resumed run's evaluation at step 4 (the one at step 8 comes after the last step's record)
    assert last["elapsed_seconds"] >= first["elapsed_seconds"] + 0.5
    assert last["train_seconds"] > first["train_seconds"]
    assert checkpoint["elapsed_seconds"] >= last["elapsed_seconds"] and checkpoint["train_seconds"] >= last["train_seconds"]


def test_training_waits_for_the_device_only_on_log_eval_and_checkpoint_steps(corpus, tmp_path, monkeypatch):
    item, tolist = torch.Tensor.item, torch.Tensor.tolist
    calls = []

    def counted(read):
        def read_and_count(self):
            if sys._getframe(1).f_code.co_filename in (train.__file__, training.__file__):  # the loop's, not the optimizer's
                calls.append(sys._getframe(1).f_lineno)
            return read(self)
        return read_and_count

    monkeypatch.setattr(torch.Tensor, "item", counted(item))
    monkeypatch.setattr(torch.Tensor, "tolist", counted(tolist))
    assert run(corpus, tmp_path, "--max_steps=20", "--log_interval=10", "--eval_interval=20", "--ckpt_interval=20") == 0
    # 2 evaluations (steps 0 and 20), 2 log lines (one check of the history, then loss and norm); no step waits
    assert len(calls) == 2 + 2 * 3, calls


def test_a_full_disk_while_checkpointing_removes_the_temporary_file_and_keeps_the_checkpoint(corpus, tmp_path, monkeypatch, capsys):
    assert run(corpus, tmp_path, "--max_steps=2") == 0
    good = (tmp_path / "ckpt.pt").read_bytes()
    save = torch.save

    def full_disk(obj, f):
        f.write(b"x" * 1000)  # part of the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    assert run(corpus, tmp_path, "--max_steps=4") == 1
    err = one_error_line(capsys)
    assert "could not write the checkpoint" in err and "No space left on device" in err and "previous checkpoint is intact" in err
    assert not (tmp_path / "ckpt.pt.tmp").exists() and (tmp_path / "ckpt.pt").read_bytes() == good
    monkeypatch.setattr(torch, "save", save)  # space freed: the same command resumes
    assert run(corpus, tmp_path, "--max_steps=4") == 0
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_a_full_disk_while_logging_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    real_open = open

    def open_full(path, mode="r", *args, **kwargs):
        if str(path).endswith("log.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_full)
    assert run(corpus, tmp_path, "--max_steps=2") == 1
    err = one_error_line(capsys)
    assert "could not append to" in err and "No space left on device" in err


@pytest.mark.parametrize("content,message", [
    (b"max_lr = (3e-4\n", "cfg.py:1: syntax error"),
    (b"max_lr = 3e-4\nn_layer = = 2\n", "cfg.py:2: syntax error"),
    (b"sample_prompt = '\xff\xfe'\n", "is not UTF-8 text"),
    (None, "is a directory"),
])
def test_unreadable_config_files_are_one_line_naming_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "cfg.py"
    path.mkdir() if content is None else path.write_bytes(content)
    assert train.main([str(path)]) == 1
    err = one_error_line(capsys)
    assert message in err and str(path) in err


def test_out_dir_that_is_a_file_or_read_only_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    (tmp_path / "taken").write_text("not a folder")
    assert run(corpus, tmp_path / "taken", "--max_steps=1") == 1
    assert "is a file, not a folder" in one_error_line(capsys)

    def read_only(path, exist_ok=False):  # as os.makedirs on a read-only mount (root ignores chmod here)
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(train.os, "makedirs", read_only)
    assert run(corpus, tmp_path / "new", "--max_steps=1") == 1
    err = one_error_line(capsys)
    assert "cannot write to out_dir" in err and "Read-only file system" in err


def test_a_shard_with_token_ids_beyond_the_vocabulary_is_named(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tokens = np.random.default_rng(0).integers(0, 1000, size=4000).astype(np.uint16)
    write_shard(str(data_dir / "x_val_000000.bin"), tokens)
    tokens[123] = 60000  # a uint16 a 50,304-entry vocabulary has no row for
    write_shard(str(data_dir / "x_train_000001.bin"), tokens)
    assert run(str(data_dir), tmp_path / "out", "--max_steps=2") == 1
    err = one_error_line(capsys)
    assert "x_train_000001.bin holds token id 60000" in err and "50304" in err


def test_a_torn_last_log_line_is_repaired_on_resume(corpus, tmp_path, capsys):
    assert run(corpus, tmp_path, "--max_steps=4") == 0
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 5, "tokens": 640, "train_lo')  # killed while writing
    assert run(corpus, tmp_path, "--max_steps=6") == 0
    assert "dropped its half-written last line" in capsys.readouterr().out
    assert [r["step"] for r in read_log(tmp_path) if "train_loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(corpus, tmp_path, monkeypatch, capsys):
    learning_rate = train.learning_rate

    def two_ctrl_c(step, cfg):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return learning_rate(step, cfg)

    monkeypatch.setattr(train, "learning_rate", two_ctrl_c)
    assert run(corpus, tmp_path, "--max_steps=10") == 130
    err = one_error_line(capsys)
    assert "interrupted again" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_help_explains_every_key_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for field in dataclasses.fields(TrainConfig):
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{field.name} = "))
        assert len(line.split(maxsplit=3)) == 4, f"--help says nothing about {field.name}"
