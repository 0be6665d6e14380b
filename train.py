"""
Train GPT-2 or one of its variants: one GPU, several through torchrun (DDP), or the CPU.

    python train.py configs/baseline.py
    python train.py configs/demo_cpu.py --max_steps=100 --out_dir=out/demo
    .venv/bin/torchrun --standalone --nproc_per_node=8 train.py configs/rotational_pos_emb.py
    python train.py configs/gpt2_xl.py --dry_run      # memory per GPU, fit, hours and dollars; nothing trained

A config file is flat Python assignments (`max_lr = 1.8e-3`) over the defaults of TrainConfig (config.py);
`--key=value` overrides it. Re-running the same command resumes from out_dir/ckpt.pt. SIGTERM or
Ctrl-C finishes the current step, writes the checkpoint and exits 130/143 (128 + the signal), so that
a Makefile or a job script stops there; a run that reached max_steps exits 0. With parallelism="fsdp" the
model is sharded over the GPUs (FSDP2) and the checkpoint is the directory out_dir/ckpt (distributed.py).
"""

import time

LAUNCH_TIME = time.time()  # before the slow imports: the cost of a run counts from its launch

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from dataclasses import dataclass, fields  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import distributed  # noqa: E402
import estimate  # noqa: E402

from config import TrainConfig, field_comments, load_config  # noqa: E402
from data import ShardLoader, atomic_write  # noqa: E402
from model import GPT, gpt_config_from_dict, gpu_peak_flops, read_checkpoint  # noqa: E402
from muon import configure_muon  # noqa: E402
from multiple_choice import evaluate, load_examples  # noqa: E402
from tokenizer import get_encoding, EOT_TOKEN  # noqa: E402


# -----------------------------------------------------------------------------
# pure pieces of the loop

def learning_rate(step, cfg):
    """The learning rate of optimizer step `step` (0-based): linear warmup, then cosine or warmup-stable-decay
    (wsd). Either reaches max_lr * min_lr_ratio at step max_steps, just after the last step, so that the last
    step still learns (with min_lr_ratio 0, a schedule ending at step max_steps - 1 would waste it at lr 0)."""
    min_lr = cfg.max_lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.max_lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.max_lr - min_lr)
    decay_start = max(cfg.warmup_steps, cfg.max_steps - round(cfg.wsd_decay_fraction * cfg.max_steps))
    if step < decay_start:
        return cfg.max_lr
    progress = min(1.0, (step - decay_start) / max(1, cfg.max_steps - decay_start))
    return cfg.max_lr + progress * (min_lr - cfg.max_lr)


def attention_window(step, cfg):
    """The attention window of step `step`: attn_window, or with attn_window_start a window that grows linearly
    from it to attn_window over the run (modded-nanogpt 11/24/24: short windows first, the whole one at the end)."""
    if not cfg.attn_window_start:
        return cfg.attn_window
    return round(cfg.attn_window_start + (cfg.attn_window - cfg.attn_window_start) * step / cfg.max_steps)


MUON_MOMENTUM_START = 0.85  # modded-nanogpt 11/06/24: 0.85 -> 0.95 over the first 300 steps


def muon_momentum(step, cfg):
    """Muon's momentum at step `step`: muon_momentum, or over the first muon_momentum_warmup_steps a linear rise to
    it from 0.85, so that the first updates follow the current gradients more than their still-noisy average."""
    if not cfg.muon_momentum_warmup_steps:
        return cfg.muon_momentum
    fraction = min(1.0, step / cfg.muon_momentum_warmup_steps)
    return MUON_MOMENTUM_START + fraction * (cfg.muon_momentum - MUON_MOMENTUM_START)


def rng_state(device):
    """Every random generator a resumed run needs, as tensors and plain values (loadable with weights_only).
    Of CUDA only this process's device: a checkpoint must resume on any number of GPUs, or none."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state(device) if torch.device(device).type == "cuda" else None
    return {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
            "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state, device):
    """Restore rng_state()'s generators; a CUDA state only onto this process's CUDA device, if it runs on one."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if isinstance(cuda, (list, tuple)):  # checkpoints before 2026-11-25 held every visible GPU's state
        cuda = cuda[0] if cuda else None
    if cuda is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(cuda.cpu(), device)


def resolve_device(name, local_rank, ddp, cuda_available):
    """The torch device a process trains on: "auto" picks CUDA when present; under torchrun "cuda" means this
    process's own GPU, cuda:LOCAL_RANK (else every rank would share GPU 0)."""
    if name == "auto":
        name = "cuda" if cuda_available else "cpu"
    if name.startswith("cuda") and not cuda_available:
        raise ValueError(f"--device={name}, but {cuda_missing_reason()}; --device=cpu forces the CPU")
    if name == "cuda" and ddp:
        name = f"cuda:{local_rank}"
    return name


def cuda_missing_reason():
    """Why torch sees no GPU, in one clause, with the command that shows it."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU build: on a GPU machine `make setup` installs the CUDA build"
    return (f"CUDA was not found (torch {torch.__version__} for CUDA {torch.version.cuda}: torch.cuda.is_available() is "
            f"False); usually the NVIDIA driver is older than this torch wheel needs: compare the CUDA version "
            f"`nvidia-smi` prints with `python -c 'import torch; print(torch.version.cuda)'`")


# a step of more FLOPs than this is for a GPU: about 20 minutes on a CPU's ~100 GFLOP/s (the baseline's is 4e17)
GPU_SIZED_FLOPS_PER_STEP = 1e14


def peak_flops_of(cfg, device):
    """The peak FLOP/s that MFU is measured against: the config's peak_flops, else the GPU's by its name; None on
    the CPU or a GPU the table does not know (MFU is then not reported)."""
    if cfg.peak_flops > 0:
        return cfg.peak_flops
    return gpu_peak_flops(torch.cuda.get_device_name(device)) if torch.device(device).type == "cuda" else None


def check_cpu_can_train(cfg, device):
    """device="auto" found no GPU: refuse a GPU-sized config rather than train it for weeks on the CPU."""
    with torch.device("meta"):  # shapes only
        flops_per_step = GPT(cfg.model_config()).flops_per_token() * cfg.total_batch_size
    if cfg.device == "auto" and device == "cpu" and flops_per_step > GPU_SIZED_FLOPS_PER_STEP:
        raise ValueError(f"{cuda_missing_reason()}, and this config is for a GPU ({flops_per_step:.1e} FLOPs per step, "
                         f"hours per step on a CPU); --device=cpu forces the CPU")


def save_checkpoint(path, checkpoint):
    """Atomic: a preemption or a full disk mid-write leaves the previous checkpoint intact and no temporary file."""
    try:
        with atomic_write(path) as f:
            torch.save(checkpoint, f)
    except OSError as e:
        kept = "the previous checkpoint is intact" if os.path.exists(path) else "no checkpoint was kept"
        raise OSError(f"could not write the checkpoint {path} ({e.strerror or e}); {kept}; "
                      f"free some disk space and rerun the same command to resume") from None


def read_any_checkpoint(path, fsdp):
    """The checkpoint to resume from, or None: out_dir/ckpt.pt's dict, or with fsdp the train_state of the
    sharded checkpoint out_dir/ckpt (its weights are loaded once the model is sharded). A checkpoint of the
    other kind is one clear error, not a fresh start over it."""
    out_dir = os.path.dirname(path)
    if fsdp:
        found = distributed.find_checkpoint(path)
        if found is None and os.path.exists(os.path.join(out_dir, "ckpt.pt")):
            raise ValueError(f"{out_dir} holds a ckpt.pt of a parallelism='ddp' run; resume it with --parallelism=ddp, "
                             f"or use another out_dir")
        return distributed.read_train_state(found) if found else None
    if not os.path.exists(path):
        if distributed.find_checkpoint(os.path.join(out_dir, "ckpt")):
            raise ValueError(f"{out_dir} holds a sharded checkpoint (ckpt/) of a parallelism='fsdp' run; resume it with "
                             f"--parallelism=fsdp (on any number of GPUs), or use another out_dir")
        return None
    checkpoint = read_checkpoint(path)
    if "optimizer" not in checkpoint:
        raise ValueError(f"{path} holds weights only (converted from a sharded checkpoint by distributed.py); resume "
                         f"from {os.path.join(out_dir, 'ckpt')} with --parallelism=fsdp")
    return checkpoint


def check_resumable(checkpoint, cfg, path):
    """A clear error when the config asks for another model or optimizer than the checkpoint holds."""
    saved = dataclasses.asdict(gpt_config_from_dict(checkpoint["model_config"]))  # fields added since: defaults
    ours = dataclasses.asdict(cfg.model_config())
    differ = [f"{k} (checkpoint {saved[k]!r}, config {ours[k]!r})" for k in ours if saved[k] != ours[k]]
    if cfg.init_from != "scratch":
        differ = []  # fine-tuning: the pretrained weights, not the config, set the model
    saved_optimizer = checkpoint["train_config"].get("optimizer", "adamw")
    if saved_optimizer != cfg.optimizer:
        differ.append(f"optimizer (checkpoint {saved_optimizer!r}, config {cfg.optimizer!r})")
    if differ:
        raise ValueError(f"{path} was trained with other settings: {', '.join(differ)}; "
                         f"use another out_dir, or delete the checkpoint to start over")


def first_nonfinite(history):
    """(step, loss, grad_norm) of the first recorded step whose loss or gradient norm is not finite, or None.
    history holds (step, loss, grad_norm) since the last check, the numbers still on the device: one transfer."""
    values = torch.stack([torch.stack([loss, norm.float()]) for _, loss, norm in history]).tolist()
    for (step, _, _), (loss, norm) in zip(history, values):
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return step, loss, norm
    return None


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its step, checkpoints and exits (spot preemption)."""

    def __init__(self):
        self.signal = None
        self.previous_handlers = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    @property
    def requested(self):
        return self.signal is not None

    def restore(self):
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once (main says so in one line)
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then writing the checkpoint", flush=True)


class Diverged(ValueError):
    """The loss or gradient norm stopped being finite; nothing after the last good checkpoint was saved."""


# Under DDP, how often the ranks agree on a requested stop (an all-reduce, so a wait for the GPU): every this many
# steps and on every checkpoint step. A single process reads its flag every step for free.
STOP_CHECK_INTERVAL = 10


# -----------------------------------------------------------------------------

def main(argv=None):
    comments = field_comments(TrainConfig)
    parser = argparse.ArgumentParser(
        description="Train GPT-2 or a variant. Every key below can be set in a config file (key = value) or "
                    "overridden as --key=value. Rerunning the same command resumes from out_dir/ckpt.pt.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="keys, defaults and what they mean:\n" + "\n".join(
            f"  {f.name + ' = ' + repr(f.default):<38} {comments.get(f.name, '')}" for f in fields(TrainConfig)) + "\n\nexit status: 0 finished, 1 error, 130/143 stopped by SIGINT/SIGTERM "
                                            "after writing the checkpoint (rerun to resume)")
    parser.add_argument("config", nargs="?", help="a config file from configs/, e.g. configs/baseline.py")
    parser.add_argument("--dry_run", action="store_true",
                        help="print parameters, memory per GPU (ddp and fsdp, 1 and 8 GPUs), whether it fits in 80 GB, "
                             "and the run's hours and dollars at assumed_mfu (estimate.py), then exit without training")
    args, overrides = parser.parse_known_args(argv)
    try:
        spaced = [a for a in (sys.argv[1:] if argv is None else argv)
                  if a.startswith("--") and "=" not in a and a != "--dry_run"]
        if spaced:  # else argparse would take `--max_steps 10`'s 10 for the config file
            raise ValueError(f"cannot parse {spaced[0]!r}: overrides are written --key=value")
        cfg = load_config(args.config, overrides)
        if args.dry_run:
            print(estimate.format_report(args.config or "the defaults", estimate.estimate(cfg, gpus=(1, 8))))
            return 0
        return train(cfg)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted again: stopped at once, without a new checkpoint; the last checkpoint is kept, "
              "rerun the same command to resume from it", file=sys.stderr)
        return 130


def train(cfg):
    """Train (or resume) the run cfg describes; 0 when it reached max_steps, 128 + signal when a requested stop
    ended it early after writing the checkpoint. Errors raise ValueError/OSError with one line to print."""
    # --- distributed setup: torchrun sets RANK/LOCAL_RANK/WORLD_SIZE
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world_size > 1
    device = resolve_device(cfg.device, local_rank, ddp, torch.cuda.is_available())
    check_cpu_can_train(cfg, device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if ddp:
        if device_type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    stop = StopFlag()
    try:
        return run(cfg, device, rank, world_size, stop)
    finally:
        stop.restore()
        if ddp:
            dist.destroy_process_group()


def build_model(cfg, checkpoint=None):
    """The GPT to train: a checkpoint's architecture, GPT-2 weights to fine-tune, or a fresh one from cfg."""
    if checkpoint is not None:
        return GPT(gpt_config_from_dict(checkpoint["model_config"]))
    if cfg.init_from != "scratch":
        return GPT.from_pretrained(cfg.init_from)  # fine-tuning: the weights set the model's shape
    return GPT(cfg.model_config())


def build_optimizer(model, cfg, device_type):
    if cfg.optimizer == "muon":
        return configure_muon(model, cfg.muon_lr, cfg.muon_momentum, cfg.max_lr, cfg.embedding_lr,
                              cfg.weight_decay, (cfg.beta1, cfg.beta2), device_type, compile_newton_schulz=cfg.compile)
    return model.configure_optimizer(cfg.weight_decay, cfg.max_lr, (cfg.beta1, cfg.beta2), device_type)


def train_step(model, optimizer, next_batch, grad_accum_steps, device, autocast, grad_clip, ddp, fsdp=False):
    """One optimizer step over grad_accum_steps micro-batches; returns (mean loss, gradient norm) as tensors on
    the device, without waiting for it. model may be compiled and DDP-wrapped; ddp all-reduces on the last
    micro-step only. fsdp: the model is FSDP2-sharded over several processes; it reduce-scatters the gradients
    of every micro-step (holding the unsharded sums until the last one would cost a whole model of gradients)."""
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(grad_accum_steps):
        x, y = next_batch()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync = nullcontext() if not ddp or micro_step == grad_accum_steps - 1 else model.no_sync()
        with sync:
            with autocast:
                loss = model(x, y)[1] / grad_accum_steps
            loss.backward()
        loss_sum += loss.detach()
    if ddp or fsdp:
        dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    if isinstance(grad_norm, DTensor):  # fsdp: the norm over every rank's shards
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


def compiled_graphs():
    """Graphs torch.compile has compiled in this process so far (Dynamo's count): recompiles show as a rise."""
    from torch._dynamo.utils import counters  # imported by torch.compile anyway; not needed without it
    return counters["stats"]["unique_graphs"]


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# -----------------------------------------------------------------------------
# one run, in the order it happens: set-up (parallelism, model and optimizer, data, out_dir), the step loop,
# evaluation, logs and checkpoints at their intervals, the end. What these parts share is one Run.

@dataclass
class Run:
    """The state of one training run: made by set_up_run, stepped by run, read by the parts in between."""
    cfg: TrainConfig
    device: str
    rank: int
    world_size: int
    stop: StopFlag
    fsdp: bool  # sharded checkpoints (out_dir/ckpt) even in one process, to resume anywhere
    sharded: bool  # fsdp over several processes; in one, FSDP has nothing to shard: the plain model
    ddp: bool
    tokens_per_micro_step: int
    grad_accum_steps: int
    ckpt_path: str
    log_path: str
    raw_model: GPT = None  # the unwrapped module: its state_dict has no _orig_mod./module. prefix
    model: torch.nn.Module = None  # what the steps call: raw_model, DDP-wrapped and compiled where asked
    optimizer: torch.optim.Optimizer = None
    train_loader: ShardLoader = None
    val_loader: ShardLoader = None
    benchmarks: dict = None  # {log key: (examples, metric)}; every rank scores its share
    autocast: object = None
    wandb_run: object = None
    peak_flops: float = None  # None: MFU is not reported
    graphs_before: int = 0  # compiled graphs before the first step: a rise after it is a recompile
    step: int = 0
    tokens_seen: int = 0
    wall_seconds_before: float = 0.0  # elapsed_seconds of the runs before this resume
    train_seconds: float = 0.0
    last_checkpoint_step: int = None
    val_loss: float = None
    history: list = dataclasses.field(default_factory=list)  # (step, loss, grad norm) since the last check, on the device
    timer: "StepTimer" = None
    first_step_seconds: float = None  # this process's first step (compiling), until a log line reports it

    @property
    def master(self):
        return self.rank == 0

    def log(self, *args):
        if self.master:
            print(*args)

    def elapsed_seconds(self):  # wall-clock since this run's first launch: start-up, compiling, evals, checkpoints too
        return self.wall_seconds_before + time.time() - LAUNCH_TIME

    def dollars(self):
        return self.elapsed_seconds() / 3600 * self.cfg.gpu_hourly_cost * self.world_size


def run(cfg, device, rank, world_size, stop):
    """Set up, then step until max_steps or a requested stop: evaluation every eval_interval steps, a log line
    every log_interval, a checkpoint every ckpt_interval and on the stop. Only those steps wait for the device."""
    r = set_up_run(cfg, device, rank, world_size, stop)
    start_step = r.step
    while True:
        if cfg.attn_window_start:  # a growing window: the step's, for its evaluation too; a tensor: no recompile
            r.raw_model.attn_window.fill_(attention_window(r.step, cfg))
        if r.step % cfg.eval_interval == 0 or r.step >= cfg.max_steps:
            evaluate_and_log(r)
        if r.step >= cfg.max_steps:  # a checkpoint past a lowered max_steps stops here too
            break

        lr = learning_rate(r.step, cfg)
        for group in r.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # muon: each group's peak over max_lr
            if "momentum" in group:  # Muon's groups (AdamW's have betas)
                group["momentum"] = muon_momentum(r.step, cfg)
        loss, grad_norm = train_step(r.model, r.optimizer, r.train_loader.next_batch, r.grad_accum_steps, device,
                                     r.autocast, cfg.grad_clip, r.ddp, fsdp=r.sharded)
        r.step += 1
        r.tokens_seen += cfg.total_batch_size
        r.history.append((r.step, loss, grad_norm))
        r.timer.steps += 1
        if r.step == start_step + 1:
            # this process's first step compiles the training graph (and warms up the GPU): timed apart, so that
            # tok_per_s, mfu and train_seconds are the steady rate, as nanoGPT's; elapsed_seconds and dollars keep it
            r.first_step_seconds = r.timer.discard_interval()

        log_now = r.step % cfg.log_interval == 0 or r.step == cfg.max_steps
        checkpoint_step = r.step % cfg.ckpt_interval == 0 or r.step == cfg.max_steps
        stop_now = stop_agreed(r, checkpoint_step)
        if not (log_now or checkpoint_step or stop_now):
            continue  # no wait for the device: the CPU queues the next step at once

        r.timer.pause()  # waits for the device, so the times below are real
        last = r.history[-1]
        check_history(r)
        if log_now:
            log_progress(r, lr, last)
        r.train_seconds = r.timer.total
        if checkpoint_step or stop_now:
            checkpoint_now(r)
            r.last_checkpoint_step = r.step
        r.timer.resume()
        if stop_now:
            r.log(f"stopped at step {r.step}; checkpoint in {r.ckpt_path}; run the same command to resume")
            break
    return finish(r)


# --- set-up: parallelism, the model and optimizer, data, out_dir

def set_up_run(cfg, device, rank, world_size, stop):
    """The Run, resumed from its checkpoint when there is one; nothing is written to out_dir until everything
    before that has been checked (a failed command never changes a finished run's files)."""
    fsdp = cfg.parallelism == "fsdp"
    tokens_per_micro_step = cfg.batch_size * cfg.block_size * world_size
    if cfg.total_batch_size % tokens_per_micro_step != 0:
        raise ValueError(f"total_batch_size={cfg.total_batch_size} must be a multiple of batch_size*block_size*GPUs "
                         f"= {cfg.batch_size}*{cfg.block_size}*{world_size}; change batch_size or total_batch_size")
    r = Run(cfg, device, rank, world_size, stop, fsdp=fsdp, sharded=fsdp and world_size > 1,
            ddp=world_size > 1 and not fsdp, tokens_per_micro_step=tokens_per_micro_step,
            grad_accum_steps=cfg.total_batch_size // tokens_per_micro_step,
            ckpt_path=os.path.join(cfg.out_dir, "ckpt" if fsdp else "ckpt.pt"),
            log_path=os.path.join(cfg.out_dir, "log.jsonl"))
    checkpoint = read_any_checkpoint(r.ckpt_path, fsdp)
    if checkpoint is not None:
        check_resumable(checkpoint, cfg, r.ckpt_path)
    set_up_model_and_data(r, checkpoint)
    if checkpoint is not None:
        restore(r, checkpoint)
    r.benchmarks = load_benchmarks(cfg)

    # --- the run starts: now out_dir may be written
    if r.master:
        make_out_dir(cfg.out_dir)
        config_record = {**dataclasses.asdict(cfg), "hardware": describe_hardware(torch.device(device).type, world_size)}
        with atomic_write(os.path.join(cfg.out_dir, "config.json")) as f:  # what the plots label the run with
            f.write(json.dumps(config_record, indent=2).encode())
        if checkpoint is not None:
            r.log(f"resuming from {r.ckpt_path} at step {r.step} ({r.tokens_seen:,} tokens seen)")
            drop_log_records_after(r.log_path, r.step)  # a resumed run re-logs the steps after its checkpoint
    r.log("config:", json.dumps(dataclasses.asdict(cfg)))
    wrap_for_training(r)
    r.wandb_run = start_wandb(cfg) if r.master and cfg.wandb_project else None
    r.peak_flops = peak_flops_of(cfg, device)
    if torch.device(device).type == "cuda" and r.peak_flops is None:
        r.log(f"MFU not reported: no peak FLOP/s known for {torch.cuda.get_device_name(device)}; set --peak_flops")
    r.log(f"{r.raw_model.num_params():,} parameters | {r.grad_accum_steps} micro-steps of {cfg.batch_size}x"
          f"{cfg.block_size} tokens x {world_size} process(es) per step | device {device} | "
          f"{max(0, cfg.max_steps - r.step)} steps to go")
    r.last_checkpoint_step = r.step if checkpoint is not None else None
    r.timer = StepTimer(device, r.train_seconds)
    return r


def set_up_model_and_data(r, checkpoint):
    """The model (sharded under FSDP), its optimizer and the two loaders, seeded alike on every rank."""
    cfg, device_type = r.cfg, torch.device(r.device).type
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if device_type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls that remain
    r.raw_model = build_model(cfg, checkpoint).to(r.device)
    r.raw_model.activation_checkpointing = cfg.activation_checkpointing
    if r.sharded:  # bfloat16 weights gathered for compute, float32 gradient reduction and optimizer
        distributed.shard_model(r.raw_model, param_dtype=torch.bfloat16 if cfg.dtype == "bfloat16" else None,
                                compile_blocks=cfg.compile)
    r.optimizer = build_optimizer(r.raw_model, cfg, device_type)  # after sharding: it holds the sharded parameters
    vocab_size = r.raw_model.config.vocab_size
    r.train_loader = ShardLoader(cfg.data_dir, "train", cfg.batch_size, cfg.block_size, r.rank, r.world_size, vocab_size)
    r.val_loader = ShardLoader(cfg.data_dir, "val", cfg.batch_size, cfg.block_size, r.rank, r.world_size, vocab_size)


def restore(r, checkpoint):
    """Weights, optimizer, data position, random state and counters from the checkpoint."""
    if r.fsdp:  # DCP reshards to this run's number of processes
        distributed.load_sharded_checkpoint(r.ckpt_path, r.raw_model, r.optimizer)
    else:
        r.raw_model.load_state_dict(checkpoint["model"])
        r.optimizer.load_state_dict(checkpoint["optimizer"])
    r.train_loader.load_state_dict(checkpoint["train_loader"])
    set_rng_state(checkpoint["rng"], r.device)
    r.step, r.tokens_seen = checkpoint["step"], checkpoint["tokens"]
    r.wall_seconds_before = checkpoint["elapsed_seconds"]
    r.train_seconds = checkpoint.get("train_seconds", r.wall_seconds_before)  # older checkpoints: step time only


def wrap_for_training(r):
    """r.model: DDP around the model, torch.compile around that; the autocast context of the steps."""
    cfg, device_type = r.cfg, torch.device(r.device).type
    r.model = r.raw_model
    if r.ddp:
        # broadcast_buffers=False: the only buffers are the RoPE tables, derived from the config on every rank
        r.model = DDP(r.model, device_ids=[torch.device(r.device).index] if device_type == "cuda" else None,
                      broadcast_buffers=False)
    if cfg.compile and not r.sharded:  # sharded: shard_model compiled each block
        # compiled around DDP: Dynamo's DDPOptimizer, on whenever a graph runs inside DDP's forward, splits it at
        # DDP's gradient buckets, so that each bucket's all-reduce overlaps the backward of the graphs before it
        # (one fused backward would hand DDP every gradient at its end); tests/test_compile.py sees the split
        r.model = torch.compile(r.model)
    r.graphs_before = compiled_graphs() if cfg.compile else 0
    r.autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")


# --- the loop's parts: stopping, evaluation, logs, checkpoints

def stop_agreed(r, checkpoint_step):
    """Whether to stop after this step: SIGTERM/SIGINT seen. Under several processes every rank must stop at the
    same step: they agree every few steps (an all-reduce, so a wait for the device) and on checkpoint steps."""
    if r.world_size == 1:
        return r.stop.requested
    if r.step % STOP_CHECK_INTERVAL != 0 and not checkpoint_step:
        return False
    flag = torch.tensor(float(r.stop.requested), device=r.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def check_history(r):
    """Stop on a non-finite loss or gradient norm before anything of it is evaluated or saved."""
    diverged = first_nonfinite(r.history) if r.history else None
    r.history = []
    if diverged is not None:
        kept = (f"{r.ckpt_path} (step {r.last_checkpoint_step}) is kept" if r.last_checkpoint_step is not None
                else "no checkpoint had been written yet")
        raise Diverged(f"the run diverged at step {diverged[0]}: loss {diverged[1]}, gradient norm {diverged[2]}; "
                       f"nothing after it was saved and {kept}; lower max_lr (or raise warmup_steps) and rerun")


def evaluate_and_log(r):
    """Validation loss and the benchmarks at this step, logged; the step timer does not count them."""
    r.timer.pause()
    check_history(r)
    r.val_loss = evaluate_val_loss(r)
    record = {"step": r.step, "tokens": r.tokens_seen, "val_loss": r.val_loss}
    for key, (examples, metric) in r.benchmarks.items():  # on the raw model, a share on every rank
        # (sharded: every rank runs every forward, whose weights are gathered from all of them); eager, as
        # the compiled blocks of a sharded model would recompile for the questions' every length
        with torch.compiler.set_stance("force_eager"):
            record[key] = benchmark_accuracy(r.raw_model, examples, metric, r.device, r.cfg.batch_size,
                                             *((0, 1) if r.sharded else (r.rank, r.world_size)))
    r.log(f"step {r.step:5d} | " + " | ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items()
                                             if k not in ("step", "tokens")))
    write_log(r, record)
    r.timer.resume()


def evaluate_val_loss(r):
    r.model.eval()
    r.val_loader.reset()
    # never more than one pass over the val shards: repeating tokens would only reweight them
    eval_steps = max(1, min(r.cfg.eval_tokens // r.tokens_per_micro_step, r.val_loader.steps_per_epoch))
    total = torch.zeros((), device=r.device)
    with torch.no_grad():
        for _ in range(eval_steps):
            x, y = r.val_loader.next_batch()
            with r.autocast:
                total += r.model(x.to(r.device), y.to(r.device))[1]
    if r.world_size > 1:
        dist.all_reduce(total, op=dist.ReduceOp.AVG)
    r.model.train()
    return total.item() / eval_steps


def log_progress(r, lr, last):
    """The log line and log.jsonl record of the steps since the last one: loss, speed, MFU, dollars."""
    cfg = r.cfg
    seconds, steps = r.timer.take_interval()
    # None while only the first step has run: its time is compilation, not a rate
    tok_per_s = steps * cfg.total_batch_size / seconds if steps else None
    mfu = mfu_causal = None
    if steps and r.peak_flops:  # both ways: nanoGPT's FLOPs (causal attention's masked half counted), and not
        mfu = r.raw_model.estimate_mfu(tok_per_s / r.world_size, r.peak_flops)
        mfu_causal = r.raw_model.estimate_mfu(tok_per_s / r.world_size, r.peak_flops, causal=True)
    train_loss, norm = last[1].item(), last[2].item()
    speed_text = (f"{seconds / steps * 1000:.0f} ms | {tok_per_s:,.0f} tok/s" if steps else
                  f"first step {r.first_step_seconds:.1f} s (compiling)")
    if mfu is not None:
        speed_text += f" | MFU {mfu * 100:.1f}% ({mfu_causal * 100:.1f}% causal)"
    r.log(f"step {r.step:5d}/{cfg.max_steps} | loss {train_loss:.4f} | lr {lr:.2e} | norm {norm:.3f} | "
          f"{speed_text} | ${r.dollars():.2f}")
    record = {"step": r.step, "tokens": r.tokens_seen, "train_loss": train_loss, "lr": lr, "grad_norm": norm,
              "tok_per_s": tok_per_s, "mfu": mfu, "mfu_causal": mfu_causal, "elapsed_seconds": r.elapsed_seconds(),
              "train_seconds": r.timer.total, "dollars": r.dollars()}
    if r.first_step_seconds is not None:  # the first log line of this process says what its first step took
        record["first_step_seconds"], r.first_step_seconds = r.first_step_seconds, None
    if cfg.compile:  # steady after the first step (train and eval graphs); a rise is a recompile
        record["compiled_graphs"] = compiled_graphs() - r.graphs_before
    write_log(r, record)


def write_log(r, record):
    if not r.master:
        return
    try:
        with open(r.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise OSError(f"could not append to {r.log_path} ({e.strerror or e}); the checkpoint {r.ckpt_path} is "
                      f"intact: free some disk space and rerun the same command to resume") from None
    if r.wandb_run:
        r.wandb_run.log(record, step=record["step"])


def checkpoint_now(r):
    """Everything a resume needs, at r.step: the model's and optimizer's state, the data position, RNG, counters."""
    state = {"model_config": dataclasses.asdict(r.raw_model.config), "train_config": dataclasses.asdict(r.cfg),
             "step": r.step, "tokens": r.tokens_seen, "elapsed_seconds": r.elapsed_seconds(),
             "train_seconds": r.train_seconds, "train_loader": r.train_loader.state_dict(), "rng": rng_state(r.device)}
    if r.fsdp:  # every rank writes its shards
        distributed.save_sharded_checkpoint(r.ckpt_path, r.raw_model, r.optimizer, state)
    elif r.master:
        save_checkpoint(r.ckpt_path, {"model": r.raw_model.state_dict(), "optimizer": r.optimizer.state_dict(), **state})


# --- the end

def finish(r):
    """The summary line and a sample after max_steps; 0 then, 128 + the signal after a requested stop."""
    cfg = r.cfg
    if r.step >= cfg.max_steps:
        r.log(f"done: {r.step} steps, {r.tokens_seen:,} tokens, final val loss {r.val_loss:.4f}, "
              f"{r.elapsed_seconds() / 60:.1f} min since launch ({r.timer.total / 60:.1f} of them training steps), "
              f"${r.dollars():.2f}")
        if cfg.sample_tokens > 0 and (r.master or r.sharded):  # sharded: every rank takes part in each forward
            with torch.compiler.set_stance("force_eager"):  # one token at a time: no graph to gain from
                r.log("sample:", sample_text(r.raw_model, cfg, r.device))
    if r.wandb_run:
        r.wandb_run.finish()
    return 0 if r.step >= cfg.max_steps else 128 + r.stop.signal


class StepTimer:
    """Seconds spent in training steps, evaluations and checkpoints left out: the clock runs from resume() to
    pause(), and pause() waits for the device (the CPU runs ahead of a GPU)."""

    def __init__(self, device, seconds=0.0):
        self.device, self.total = device, seconds
        self.interval_seconds, self.steps = 0.0, 0  # since the last take_interval()
        self.start = time.time()

    def pause(self):
        synchronize(self.device)
        seconds = time.time() - self.start
        self.total += seconds
        self.interval_seconds += seconds
        self.start = time.time()

    def resume(self):
        self.start = time.time()

    def discard_interval(self):
        """Leave the steps since the last take_interval() out of every count (waits for the device); their seconds."""
        self.pause()
        seconds = self.interval_seconds
        self.total -= seconds
        self.interval_seconds, self.steps = 0.0, 0
        return seconds

    def take_interval(self):
        """(seconds, steps) since the last call."""
        interval = (self.interval_seconds, self.steps)
        self.interval_seconds, self.steps = 0.0, 0
        return interval


def make_out_dir(out_dir):
    """out_dir, created if needed, or one clear error: a file in the way, a read-only disk."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {out_dir} is a file, not a folder; choose another out_dir")
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise OSError(f"cannot write to out_dir {out_dir} ({e.strerror or e}); choose a writable out_dir") from None


def load_benchmarks(cfg):
    """The zero-shot benchmarks to score at every eval, as {log key: (examples, metric)}; missing data is an error."""
    from multiple_choice import CSQA_FORMATS  # here, not at the top: this function is all that uses it
    if cfg.csqa_format not in CSQA_FORMATS:
        raise ValueError(f"csqa_format={cfg.csqa_format!r} is not one of {sorted(CSQA_FORMATS)} (eval_commonsense_qa.py's --format)")
    wanted = {"csqa_acc": (CSQA_FORMATS[cfg.csqa_format], cfg.csqa_data, "acc"),
              "hellaswag_acc_norm": ("hellaswag", cfg.hellaswag_data, "acc_norm")}
    return {key: (load_examples(task, None if data == "hf" else data, cfg.eval_limit or None), metric)
            for key, (task, data, metric) in wanted.items() if data}


def benchmark_accuracy(model, examples, metric, device, batch_size, rank=0, world_size=1):
    """evaluate()'s metric ("acc" or "acc_norm") over all examples, each rank scoring every world_size-th one,
    so that no GPU idles while one scores them all."""
    prediction = {"acc": "pred", "acc_norm": "pred_norm"}[metric]
    mine = examples[rank::world_size]
    scored = evaluate(model, mine, device, batch_size)["examples"] if mine else []
    correct = torch.tensor(float(sum(e[prediction] == e["label"] for e in scored)), device=device)
    if world_size > 1:
        dist.all_reduce(correct)
    return correct.item() / len(examples)


def drop_log_records_after(log_path, step):
    """Keep what log.jsonl says up to a checkpoint at `step`, so a resumed run's log reads as one run:
    training records up to `step` (the checkpoint holds their updates), evaluations before `step`
    (the resumed run evaluates at `step` again). A half-written last line (the process was killed while
    writing it) is dropped with a note: the log is a record, the checkpoint is the truth."""
    if not os.path.exists(log_path):
        return
    with open(log_path, encoding="utf-8", errors="replace") as f:
        lines = [(number, line) for number, line in enumerate(f.read().split("\n"), 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i < len(lines) - 1:
                raise ValueError(f"{log_path} line {number} is not JSON ({e.msg}); repair or delete that line") from None
            print(f"{log_path}: dropped its half-written last line (the run was stopped while writing it)")
    kept = [r for r in records if r["step"] < step or (r["step"] == step and "val_loss" not in r)]
    with atomic_write(log_path) as f:
        f.write("".join(json.dumps(r) + "\n" for r in kept).encode())


def describe_hardware(device_type, world_size):
    if device_type == "cuda":
        return f"{world_size} x {torch.cuda.get_device_name()}"
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"CPU, {os.cpu_count()} cores ({cpu})" + (f", {world_size} processes" if world_size > 1 else "")


def start_wandb(cfg):
    try:
        import wandb
    except ImportError:
        print("wandb_project is set but wandb is not installed (pip install wandb); logging to log.jsonl only")
        return None
    return wandb.init(project=cfg.wandb_project, name=os.path.basename(cfg.out_dir.rstrip("/")),
                      config=dataclasses.asdict(cfg), resume="allow")


def sample_text(model, cfg, device):
    """A short continuation of sample_prompt, sampled at the end of training."""
    enc = get_encoding()
    prompt = [EOT_TOKEN] + enc.encode_ordinary(cfg.sample_prompt)
    torch.manual_seed(cfg.seed)  # the same sample for the same weights; training is over, its RNG no longer matters
    model.eval()
    out = model.generate(torch.tensor([prompt], device=device), cfg.sample_tokens, temperature=0.8, top_k=50)
    return enc.decode(out[0, 1:].tolist())


if __name__ == "__main__":
    sys.exit(main())
