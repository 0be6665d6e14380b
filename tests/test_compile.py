"""torch.compile in every combination a GPU user runs by default, here on the CPU (Inductor's C++ backend):
one process, DDP and FSDP2 on 2 gloo ranks, activation checkpointing, Muon's compiled Newton-Schulz. Each run
is train.py itself, 20 steps at a tiny shape (2 layers, 64 wide), held against the eager run of one process.

Tolerance: float32 throughout, so a compiled run differs from the eager one only by the order of its sums
(Inductor fuses and reorders reductions; gloo sums the ranks' gradients): measured at most 1e-5 on these 20
losses, AdamW at max_lr 3e-3 (at 1e-2 this tiny model's dynamics amplify last-bit differences ~2.5x a step
after step 15). 1e-4 stays far below what a real fault moves: a lost rank, a gradient summed instead of
averaged, or a step on stale weights changes the loss by 1e-2 and more within a few steps.

Recompiles: train.py logs compiled_graphs (Dynamo's count) at every log line; it must be the train and the
eval graph from the first step to the last, and nothing more (Muon adds one graph per matrix shape)."""

import os
import subprocess
import sys

import pytest
import torch

import train
from test_train import REPO, read_log

STEPS = 20
TINY64 = ["--block_size=16", "--n_layer=2", "--n_head=2", "--n_embd=64", "--batch_size=4", "--total_batch_size=128",
          "--warmup_steps=2", "--max_lr=3e-3", "--eval_tokens=128", "--eval_interval=10", "--log_interval=1",
          "--device=cpu", "--dtype=float32", "--sample_tokens=0", "--csqa_data=", "--hellaswag_data=",
          f"--max_steps={STEPS}"]
MODERN_MUON = ["--optimizer=muon", "--pos_emb=rope", "--norm=rmsnorm", "--mlp=relu2", "--tie_embeddings=False",
               "--bias=False"]


def train_in_process(corpus, out_dir, *overrides):
    torch._dynamo.reset()  # another test's graphs must neither be reused nor counted
    assert train.main([f"--data_dir={corpus}", f"--out_dir={out_dir}", *TINY64, *overrides]) == 0
    return [r for r in read_log(out_dir) if "train_loss" in r]


def train_on_two_ranks(corpus, out_dir, *overrides, env=None):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(torchrun + ["train.py", f"--data_dir={corpus}", f"--out_dir={out_dir}", *TINY64, *overrides],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [r for r in read_log(out_dir) if "train_loss" in r], result.stderr


@pytest.fixture(scope="module")
def eager(corpus, tmp_path_factory):
    """The eager one-process runs every compiled run is held against: AdamW (GPT-2's model) and Muon (modern's)."""
    return {"adamw": train_in_process(corpus, tmp_path_factory.mktemp("eager"), "--compile=False"),
            "muon": train_in_process(corpus, tmp_path_factory.mktemp("eager_muon"), "--compile=False", *MODERN_MUON)}


def assert_same_run(records, reference):
    assert [r["step"] for r in records] == [r["step"] for r in reference] == list(range(1, STEPS + 1))
    for ours, theirs in zip(records, reference):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-4), ours["step"]
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-3), ours["step"]
    assert reference[-1]["train_loss"] < reference[0]["train_loss"] - 2  # it learned: the runs compared are not flat


def assert_no_recompiles(records, graphs):
    assert [r["compiled_graphs"] for r in records] == [graphs] * STEPS


def test_compiled_single_process_equals_eager_with_two_graphs(corpus, tmp_path, eager):
    from cheapgpt2.checkpoint import load_checkpoint
    records = train_in_process(corpus, tmp_path, "--compile=True")
    assert_same_run(records, eager["adamw"])
    assert_no_recompiles(records, 2)
    _, checkpoint = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert not any(key.startswith("_orig_mod.") for key in checkpoint["model"])  # the raw module's state


def test_compiled_activation_checkpointing_equals_eager(corpus, tmp_path, eager):
    records = train_in_process(corpus, tmp_path, "--compile=True", "--activation_checkpointing=True")
    assert_same_run(records, eager["adamw"])
    assert_no_recompiles(records, 2)


def test_compiled_muon_equals_eager_and_compiles_its_newton_schulz(corpus, tmp_path, eager):
    records = train_in_process(corpus, tmp_path, "--compile=True", *MODERN_MUON)
    # the model's train and eval graphs, and Newton-Schulz for each of the 4 matrix shapes Muon batches:
    # (6, 64, 64) q, k, v blocks; (2, 64, 64) attention projections; (2, 256, 64) and (2, 64, 256) the MLP's
    assert_no_recompiles(records, 2 + 4)
    # Muon's Newton-Schulz runs in bfloat16 and amplifies last-bit differences (tests/test_distributed.py)
    for ours, theirs in zip(records, eager["muon"]):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-3), ours["step"]


def test_compiled_ddp_on_two_gloo_ranks_equals_one_process_and_splits_at_gradient_buckets(corpus, tmp_path, eager):
    from cheapgpt2.checkpoint import load_checkpoint
    # DDPOptimizer says how many graphs it split the model into; it runs only where torch.compile sees DDP
    # batch_size 2: 2 micro-steps on each rank, the first under DDP's no_sync, reached through the compiled wrapper
    records, stderr = train_on_two_ranks(corpus, tmp_path, "--compile=True", "--parallelism=ddp", "--batch_size=2",
                                         env={"TORCH_LOGS": "torch._dynamo.backends.distributed"})
    assert_same_run(records, eager["adamw"])
    assert_no_recompiles(records, 2)
    # 2 buckets: DDP's first bucket (1 MB) fills with the head's 50304 x 64 weight, the rest is the second;
    # each bucket's all-reduce can start while the backward of the graphs before it still runs
    assert "DDPOptimizer used bucket cap 26214400 and created 2 buckets" in stderr
    _, checkpoint = load_checkpoint(str(tmp_path / "ckpt.pt"))
    assert not any(key.startswith(("_orig_mod.", "module.")) for key in checkpoint["model"])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiled_fsdp_on_two_gloo_ranks_equals_one_process(corpus, tmp_path, eager, checkpointing):
    records, _ = train_on_two_ranks(corpus, tmp_path, "--compile=True", "--parallelism=fsdp",
                                    f"--activation_checkpointing={checkpointing}")
    assert_same_run(records, eager["adamw"])
    # each block's forward compiled apart, FSDP's hooks outside: one train and one eval graph shared by the
    # blocks; compiling the sharded root instead broke the graph at every block's hooks
    assert_no_recompiles(records, 2)
