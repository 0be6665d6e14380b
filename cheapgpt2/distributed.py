"""
Training past one GPU's memory with PyTorch's own engine: FSDP2 sharding, and the sharded (DCP) checkpoints
that go with it, which resume on any number of processes and convert into the single-file ckpt.pt.

    python convert_checkpoint.py out/gpt2_xl/ckpt              # -> out/gpt2_xl/ckpt.pt, for sample.py and the evals
    torchrun --nproc_per_node=8 train.py configs/gpt2_xl.py --parallelism=fsdp

References:
1) FSDP2, torch.distributed.fsdp.fully_shard (PyTorch docs, "Getting started with FSDP2"): each block and then
   the root sharded over the ranks along dim 0, parameters gathered in bfloat16 per block for compute,
   gradients reduce-scattered in float32 (MixedPrecisionPolicy).
2) torch.distributed.checkpoint (DCP) with torch.distributed.checkpoint.state_dict's get_state_dict /
   set_state_dict: every rank writes its own shards, and loading reshards to whatever the new run has.
3) torchtitan (pytorch/torchtitan) applies the same recipe per block: activation checkpointing, torch.compile,
   then fully_shard.

Layout of a checkpoint directory (out_dir/ckpt):
  .metadata, __*_*.distcp   DCP: {"model": ..., "optimizer": ...}, the shards of every rank
  train_state.pt            written last, by rank 0: step, tokens, configs, the loader position and RNG state
It is written to out_dir/ckpt.tmp and renamed into place only once complete; the previous checkpoint is
moved to out_dir/ckpt.old for the instant of the swap. A preemption at any point leaves one complete
checkpoint: find_checkpoint takes ckpt, else ckpt.old. Every rank must see the same out_dir (one machine,
or a shared file system across machines).
"""

import os
import shutil
import warnings
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from cheapgpt2.checkpoint import gpt_config_from_dict
from cheapgpt2.common import atomic_path
from cheapgpt2.model import GPT

TRAIN_STATE = "train_state.pt"


def shard_model(model, param_dtype=torch.bfloat16, compile_blocks=False):
    """FSDP2 over every rank of the default process group, in place: each block, then the root (embeddings,
    final norm, head). param_dtype is the dtype parameters are gathered in for compute (None: their own,
    float32); gradients are reduced in float32. compile_blocks compiles each block's forward before sharding it
    (reference 3's order): FSDP's gather and reduce-scatter hooks stay outside the compiled code, where a
    compiled root would break its graph at every block's hooks. State_dict keys are unchanged."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.transformer.h:
        if compile_blocks:
            block.forward = torch.compile(block.forward)
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    if hasattr(model, "forward_cached"):  # the KV-cache path enters the root by another door than forward
        register_fsdp_forward_method(model, "forward_cached")
    return model


def optimizers_of(optimizer):
    """The torch optimizers behind an optimizer or a muon.OptimizerList: what DCP's state_dict helpers take."""
    return list(getattr(optimizer, "optimizers", [optimizer]))


def find_checkpoint(ckpt_dir):
    """The complete checkpoint directory to resume from, or None: ckpt_dir, or the previous one (ckpt_dir.old)
    left by a preemption in the middle of the swap. A directory is complete once it has train_state.pt."""
    for path in (ckpt_dir, ckpt_dir + ".old"):
        if os.path.isfile(os.path.join(path, TRAIN_STATE)):
            return path
    return None


def save_sharded_checkpoint(ckpt_dir, model, optimizer, train_state):
    """Every rank calls this: DCP shards of the model and optimizer, plus train_state (rank 0's dict of plain
    values and tensors) as train_state.pt, swapped in atomically (module docstring)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    tmp_dir, old_dir = ckpt_dir + ".tmp", ckpt_dir + ".old"
    if rank == 0 and os.path.exists(tmp_dir):
        shutil.rmtree(tmp_dir)  # a save that a preemption cut short
    barrier()
    model_state, optimizer_state = get_state_dict(model, optimizers_of(optimizer))
    with one_process_is_fine():
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp_dir)
    if rank == 0:
        with atomic_path(os.path.join(tmp_dir, TRAIN_STATE)) as tmp_path:
            torch.save(train_state, tmp_path)
        if os.path.exists(ckpt_dir):
            if os.path.exists(old_dir):
                shutil.rmtree(old_dir)
            os.replace(ckpt_dir, old_dir)
        os.replace(tmp_dir, ckpt_dir)
        if os.path.exists(old_dir):
            shutil.rmtree(old_dir)
    barrier()


def load_sharded_checkpoint(ckpt_dir, model, optimizer):
    """Load a checkpoint written by save_sharded_checkpoint into model and optimizer, sharded or not, on any
    number of ranks (DCP reshards); returns its train_state dict."""
    path = find_checkpoint(ckpt_dir)
    if path is None:
        raise FileNotFoundError(f"{ckpt_dir} holds no complete sharded checkpoint (no {TRAIN_STATE})")
    model_state, optimizer_state = get_state_dict(model, optimizers_of(optimizer))
    state = {"model": model_state, "optimizer": optimizer_state}
    with one_process_is_fine():
        dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizers_of(optimizer), model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
    return read_train_state(path)


def read_train_state(path):
    return torch.load(os.path.join(path, TRAIN_STATE), map_location="cpu", weights_only=True)


def convert_to_single_file(ckpt_dir, out_path):
    """The model of a sharded checkpoint as the single-file ckpt.pt that sample.py, the evals and export read
    (model weights and configs, no optimizer state), in one process. Returns out_path."""
    path = find_checkpoint(ckpt_dir)
    if path is None:
        raise FileNotFoundError(f"{ckpt_dir} holds no complete sharded checkpoint (no {TRAIN_STATE}); "
                                f"pass the out_dir/ckpt directory of a run with parallelism='fsdp'")
    train_state = read_train_state(path)
    model = GPT(gpt_config_from_dict(train_state["model_config"]))
    state = {"model": model.state_dict()}
    with one_process_is_fine():
        dcp.load(state, checkpoint_id=path)  # only the model's entries are read
    model.load_state_dict(state["model"])
    checkpoint = {"model": model.state_dict(), "model_config": train_state["model_config"],
                  **{k: train_state[k] for k in ("train_config", "step", "tokens") if k in train_state}}
    with atomic_path(out_path) as tmp_path:
        torch.save(checkpoint, tmp_path)
    return out_path


@contextmanager
def one_process_is_fine():
    """DCP warns at every save and load without a process group; one process is a use we intend (resume anywhere)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def barrier():
    if dist.is_initialized():
        dist.barrier()
