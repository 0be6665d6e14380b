"""distributed.py: FSDP2 over 2 gloo processes trains as 1 process with the same global batch (AdamW, Muon,
activation checkpointing), and its sharded checkpoints resume on 2 processes and on 1, and convert to ckpt.pt.

One spawn of 2 ranks runs every scenario (process start-up is most of the cost); the single-process
references run in the test's own process. Gradient norms are compared as well as losses and weights: AdamW
and Muon are nearly blind to a gradient's scale, so a reduction that sums instead of averaging
(pytorch/pytorch#162338, reported for FSDP2 on gloo) would hide from the weights but not from the norms."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor

from cheapgpt2 import distributed
import test_muon_parallel
from cheapgpt2 import training
from cheapgpt2.checkpoint import load_checkpoint
from cheapgpt2.model import GPT
from cheapgpt2.muon import configure_muon
from cheapgpt2.training import configure_adamw
import convert_checkpoint
from test_model import small_config

GLOBAL_BATCH, STEPS = 4, 3
MODERN = dict(pos_emb="rope", mlp="relu2", norm="rmsnorm", qk_norm=True, tie_embeddings=False, bias=False,
              logit_softcap=15.0, block_size=16)
# name: (model options, optimizer, activation checkpointing)
SCENARIOS = {"adamw": (dict(block_size=16), "adamw", False),
             "muon": (MODERN, "muon", False),
             "muon_checkpointed": (MODERN, "muon", True),
             # the speedrun's additions: value embeddings and skip weights live in the root's shard, the window
             # and document masks (no <|endoftext|> in this vocabulary of 97: every row is one document) in the blocks
             "speedrun": (dict(MODERN, attn_window=6, doc_mask=True, value_embeds=True, unet_skips=True), "muon", True)}


def batches():
    g = torch.Generator().manual_seed(3)
    return [(torch.randint(0, 97, (GLOBAL_BATCH, 16), generator=g), torch.randint(0, 97, (GLOBAL_BATCH, 16), generator=g))
            for _ in range(STEPS)]


def build(options, optimizer_name, shard=False, checkpointing=False):
    torch.manual_seed(0)
    model = GPT(small_config(**options))
    model.activation_checkpointing = checkpointing
    if shard:  # float32 compute: the comparison is about the sharding, not bfloat16's rounding
        distributed.shard_model(model, param_dtype=None)
    if optimizer_name == "muon":
        optimizer = configure_muon(model, 0.02, 0.95, 1e-3, 1e-2, 0.0, (0.8, 0.95), "cpu")
    else:
        optimizer = configure_adamw(model, 0.1, 1e-3, (0.9, 0.95), "cpu")
    return model, optimizer


def train_steps(model, optimizer, steps, slices=2):
    """(losses, gradient norms) of the global batch; each of 2 ranks takes its slice of every batch, and one
    process the mean of the same slices' losses: the same sums, so that float32 rounding, which Muon's
    bfloat16 Newton-Schulz would amplify, is the same too (the whole batch's mean at once differs from the
    slices' by 1 ulp, and the weights after 3 Muon steps by up to 5e-4)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    per_slice = GLOBAL_BATCH // slices
    losses, norms = [], []
    for x, y in steps:
        mine = range(rank, rank + 1) if world > 1 else range(slices)
        loss = sum(model(x[i * per_slice:(i + 1) * per_slice], y[i * per_slice:(i + 1) * per_slice])[1]
                   for i in mine) / len(mine)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = loss.detach()
        if world > 1:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        losses.append(loss.item())
        norms.append((norm.full_tensor() if isinstance(norm, DTensor) else norm).item())
    return losses, norms


def full_weights(model):
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for name, p in model.named_parameters()}


def train_state(options):
    return {"step": 2, "tokens": 2 * GLOBAL_BATCH * 16, "model_config": small_config(**options).__dict__}


def fsdp_rank(rank, world_size, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data, results = batches(), {}
        results["muon_plain_tensors"] = test_muon_parallel.run_muon()  # DDP's case: every rank holds whole matrices
        for name, (options, optimizer_name, checkpointing) in SCENARIOS.items():
            model, optimizer = build(options, optimizer_name, shard=True, checkpointing=checkpointing)
            losses, norms = train_steps(model, optimizer, data[:2])
            if name == "muon":
                distributed.save_sharded_checkpoint(os.path.join(out_dir, "ckpt"), model, optimizer, train_state(options))
            more_losses, more_norms = train_steps(model, optimizer, data[2:])
            results[name] = (losses + more_losses, norms + more_norms, full_weights(model))
            local_bytes = sum(p.to_local().numel() * 4 for p in model.parameters())
            results[name + "_local_bytes"] = local_bytes
        # resume on 2 ranks: fresh sharded model and optimizer, the checkpoint of step 2, then step 3
        model, optimizer = build(MODERN, "muon", shard=True)
        state = distributed.load_sharded_checkpoint(os.path.join(out_dir, "ckpt"), model, optimizer)
        results["resumed_on_2"] = (*train_steps(model, optimizer, data[2:]), full_weights(model), state["step"])
        if rank == 0:
            torch.save(results, os.path.join(out_dir, "results.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("fsdp"))
    mp.spawn(fsdp_rank, args=(2, free_port(), out_dir), nprocs=2, join=True)
    return out_dir, torch.load(os.path.join(out_dir, "results.pt"), weights_only=True)


def assert_same_run(ours, reference, name):
    (losses, norms, weights), (ref_losses, ref_norms, ref_weights) = ours[:3], reference[:3]
    # float32 throughout; the two ranks' halves are averaged where one process takes the mean at once,
    # a difference in the last bits (1e-6 relative), far below a factor of 2 or a lost rank
    assert losses == pytest.approx(ref_losses, rel=1e-5), name
    assert norms == pytest.approx(ref_norms, rel=1e-4), name
    for key, w in weights.items():
        torch.testing.assert_close(w, ref_weights[key], atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {key}: {m}")


def test_muon_split_over_two_gloo_ranks_equals_one_process(two_rank_run):
    # each rank applied the updates it computed and the ones it received: bit for bit one process's
    _, results = two_rank_run
    for ours, reference in zip(results["muon_plain_tensors"], test_muon_parallel.run_muon()):
        torch.testing.assert_close(ours, reference, atol=0, rtol=0)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fsdp_on_two_gloo_ranks_trains_as_one_process(two_rank_run, name):
    _, results = two_rank_run
    options, optimizer_name, _ = SCENARIOS[name]
    model, optimizer = build(options, optimizer_name)
    reference = (*train_steps(model, optimizer, batches()), full_weights(model))
    assert_same_run(results[name], reference, name)
    # each rank holds half of the float32 parameters (dim 0 shards; rows that don't split evenly round up)
    total = 4 * sum(p.numel() for p in model.parameters())
    assert total / 2 <= results[name + "_local_bytes"] <= total / 2 + 4 * 1024


def test_sharded_checkpoint_resumes_on_two_ranks_and_on_one_process(two_rank_run):
    out_dir, results = two_rank_run
    data = batches()
    model, optimizer = build(MODERN, "muon")  # one process, not sharded
    state = distributed.load_sharded_checkpoint(os.path.join(out_dir, "ckpt"), model, optimizer)
    assert state["step"] == results["resumed_on_2"][3] == 2
    resumed_on_1 = (*train_steps(model, optimizer, data[2:]), full_weights(model))
    uninterrupted_losses, uninterrupted_norms, uninterrupted_weights = results["muon"]
    uninterrupted = ([uninterrupted_losses[2]], [uninterrupted_norms[2]], uninterrupted_weights)
    assert_same_run(results["resumed_on_2"], uninterrupted, "resumed on 2")
    assert_same_run(resumed_on_1, uninterrupted, "resumed on 1")


def test_sharded_checkpoint_converts_to_a_ckpt_pt_with_the_same_logits(two_rank_run, tmp_path):
    out_dir, _ = two_rank_run
    assert convert_checkpoint.main([os.path.join(out_dir, "ckpt"), "--out", str(tmp_path / "ckpt.pt")]) == 0
    converted, checkpoint = load_checkpoint(str(tmp_path / "ckpt.pt"))  # what sample.py and the evals use
    assert checkpoint["step"] == 2
    model, optimizer = build(MODERN, "muon")
    distributed.load_sharded_checkpoint(os.path.join(out_dir, "ckpt"), model, optimizer)
    idx = batches()[0][0]
    with torch.no_grad():
        torch.testing.assert_close(converted(idx)[0], model(idx)[0], atol=0, rtol=0)


def test_a_save_cut_short_leaves_the_previous_checkpoint(two_rank_run, tmp_path, capsys):
    out_dir, _ = two_rank_run
    ckpt = str(tmp_path / "ckpt")
    import shutil
    shutil.copytree(os.path.join(out_dir, "ckpt"), ckpt + ".old")  # preempted between the two renames
    os.makedirs(ckpt + ".tmp")  # and a half-written new one
    assert distributed.find_checkpoint(ckpt) == ckpt + ".old"
    assert distributed.find_checkpoint(str(tmp_path / "nothing")) is None
    assert convert_checkpoint.main([str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


# -----------------------------------------------------------------------------
# train.py with parallelism="fsdp"

def test_fsdp_on_two_torchrun_nodes_stopped_by_sigterm_resumes_in_one_process_on_the_same_curve(tmp_path):
    """Two torchrun "nodes" on localhost (c10d rendezvous, one process each) train with FSDP and Muon until a
    SIGTERM to both (a Slurm preemption); one process resumes their sharded checkpoint to max_steps; the log
    reads as one process's straight run, step for step."""
    import json
    import signal
    import subprocess
    import sys
    import time
    import numpy as np
    import train
    from cheapgpt2.data import write_shard
    from test_train import REPO, TINY, read_log
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    stream = np.tile(np.random.default_rng(0).integers(0, 1000, size=97), 300).astype(np.uint16)
    write_shard(str(corpus / "fixture_val_000000.bin"), stream[:3000])
    write_shard(str(corpus / "fixture_train_000001.bin"), stream[3000:])
    common = [f"--data_dir={corpus}", *TINY, "--parallelism=fsdp", "--optimizer=muon", "--eval_interval=5",
              "--max_steps=30"]
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=fsdp_test", "train.py", *common,
            f"--out_dir={tmp_path / 'nodes'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(node, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for _ in range(2)]
    log, deadline = tmp_path / "nodes" / "log.jsonl", time.time() + 240
    while time.time() < deadline and not (log.exists() and any(
            "train_loss" in json.loads(line) for line in log.read_text().splitlines() if line.strip())):
        time.sleep(0.05)
    for n in nodes:  # torchrun and its worker, as Slurm signals a job step
        os.killpg(n.pid, signal.SIGTERM)
    outputs = [n.communicate(timeout=240)[0] for n in nodes]
    assert os.path.isdir(tmp_path / "nodes" / "ckpt"), outputs[0][-3000:]
    stopped_at = distributed.read_train_state(str(tmp_path / "nodes" / "ckpt"))["step"]
    # the ranks agree on a stop every training.STOP_CHECK_INTERVAL steps, so both stop and save at the same one
    assert stopped_at % training.STOP_CHECK_INTERVAL == 0 and stopped_at < 30, outputs[0][-3000:]
    assert train.main(common + [f"--out_dir={tmp_path / 'nodes'}"]) == 0  # on one process now
    assert train.main(common + [f"--out_dir={tmp_path / 'single'}"]) == 0
    single, nodes = ([r for r in read_log(tmp_path / name) if "train_loss" in r] for name in ("single", "nodes"))
    assert [r["step"] for r in single] == [r["step"] for r in nodes] == list(range(1, 31))
    for a, b in zip(single, nodes):
        # Muon's bfloat16 Newton-Schulz turns the last-bit differences of two reduction orders (the ranks' halves
        # averaged vs. micro-batches accumulated) into small, compounding differences: measured at most 1.8e-4
        # of loss and 0.4% of gradient norm over these 30 steps, while a step moves the loss by 0.05 to 0.3.
        # The gradient norm, which AdamW and Muon would hide, catches a gradient scaling error (a sum instead
        # of a mean doubles it; a lost rank's half changes it by far more than 2%)
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-3, a["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=2e-2), a["step"]


def test_dry_run_prints_the_table_without_training(tmp_path, capsys):
    from cheapgpt2 import estimate
    import train
    from cheapgpt2.config import load_config
    config = os.path.join(os.path.dirname(os.path.dirname(distributed.__file__)), "configs", "demo_cpu.py")
    assert train.main([config, "--dry_run", f"--out_dir={tmp_path / 'never'}"]) == 0
    out = capsys.readouterr().out
    millions = estimate.count_parameters(load_config(config).model_config())["total"] / 1e6
    assert f"{millions:,.0f}M parameters" in out and "fits 80GB" in out and out.count("fsdp") == 4
    assert not os.path.exists(tmp_path / "never")


def test_a_checkpoint_of_the_other_parallelism_is_one_clear_line(two_rank_run, tmp_path, capsys):
    import shutil
    import train
    out_dir, _ = two_rank_run
    shutil.copytree(os.path.join(out_dir, "ckpt"), tmp_path / "ckpt")
    assert train.main([f"--out_dir={tmp_path}", "--parallelism=ddp", "--device=cpu", "--data_dir=nowhere"]) == 1
    assert "--parallelism=fsdp" in capsys.readouterr().err


@pytest.mark.parametrize("compiled", [False, True])
def test_activation_checkpointing_gives_the_same_gradients_and_keeps_fewer_activations(compiled):
    """Recomputing the blocks in the backward changes what is kept, never the gradients; compiled too, where the
    module-hook checkpointing used before failed (its recomputed tensors did not match the saved ones)."""
    idx, targets = batches()[0]
    gradients = []
    for checkpointing in (False, True):
        torch._dynamo.reset()
        model, _ = build(MODERN, "adamw", checkpointing=checkpointing)
        forward = torch.compile(model) if compiled else model
        saved = []  # the bytes of every tensor autograd keeps for the backward (a compiled graph's too)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            loss = forward(idx, targets)[1]
        loss.backward()
        gradients.append(([p.grad for p in model.parameters()], sum(saved)))
    (plain, plain_saved), (checkpointed, checkpointed_saved) = gradients
    for a, b in zip(plain, checkpointed):
        # the same operations again: bit for bit eager; compiled, the two graphs may fuse the recomputed ops
        # differently (9 of 3,104 elements 6e-7 apart relatively on one machine, equal on another); a recomputation
        # that read other weights or another dropout mask would be far off
        torch.testing.assert_close(a, b, **(dict(atol=1e-9, rtol=1e-5) if compiled else dict(atol=0, rtol=0)))
    # the blocks' activations are recomputed, not kept: measured 137,732 of 711,684 bytes eager, 174,020 of
    # 474,180 compiled (which already keeps fewer: the partitioner recomputes cheap elementwise ops)
    assert checkpointed_saved < plain_saved / 2
