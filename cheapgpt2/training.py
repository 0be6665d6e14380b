"""
The pieces of training that train.py's loop calls, and that the benchmarks (measure/bench_train.py,
measure/gpu_check.py) share with it: the schedules, the model and optimizer a config asks for, one optimizer
step, resuming (checkpoint checks, random state), the stop on a signal, the step timer, the benchmarks scored
during training, the log. Pure functions where they can be: the tests call them directly.
"""

import dataclasses
import json
import math
import os
import random
import signal
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from cheapgpt2 import distributed
from cheapgpt2.checkpoint import gpt_config_from_dict, read_checkpoint
from cheapgpt2.common import atomic_write, cuda_missing_reason
from cheapgpt2.estimate import flops_per_token, gpu_peak_flops
from cheapgpt2.generate import generate
from cheapgpt2.hf import from_pretrained
from cheapgpt2.model import GPT
from cheapgpt2.multiple_choice import CSQA_FORMATS, evaluate, load_examples
from cheapgpt2.muon import configure_muon
from cheapgpt2.tokenizer import EOT_TOKEN, get_encoding


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
        flops_per_step = flops_per_token(GPT(cfg.model_config())) * cfg.total_batch_size
    if cfg.device == "auto" and device == "cpu" and flops_per_step > GPU_SIZED_FLOPS_PER_STEP:
        raise ValueError(f"{cuda_missing_reason()}, and this config is for a GPU ({flops_per_step:.1e} FLOPs per step, "
                         f"hours per step on a CPU); --device=cpu forces the CPU")


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


def stop_agreed(stop, step, checkpoint_step, world_size, device):
    """Whether to stop after this step: SIGTERM/SIGINT seen. Under several processes every rank must stop at the
    same step: they agree every few steps (an all-reduce, so a wait for the device) and on checkpoint steps."""
    if world_size == 1:
        return stop.requested
    if step % STOP_CHECK_INTERVAL != 0 and not checkpoint_step:
        return False
    flag = torch.tensor(float(stop.requested), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def raise_if_diverged(history, ckpt_path, last_checkpoint_step):
    """Stop on a non-finite loss or gradient norm before anything of it is evaluated or saved."""
    diverged = first_nonfinite(history) if history else None
    if diverged is not None:
        kept = (f"{ckpt_path} (step {last_checkpoint_step}) is kept" if last_checkpoint_step is not None
                else "no checkpoint had been written yet")
        raise Diverged(f"the run diverged at step {diverged[0]}: loss {diverged[1]}, gradient norm {diverged[2]}; "
                       f"nothing after it was saved and {kept}; lower max_lr (or raise warmup_steps) and rerun")


def append_log(log_path, record, ckpt_path, wandb_run=None):
    """One record appended to log.jsonl (and sent to wandb); a full disk is one line that says the checkpoint is whole."""
    try:
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise OSError(f"could not append to {log_path} ({e.strerror or e}); the checkpoint {ckpt_path} is "
                      f"intact: free some disk space and rerun the same command to resume") from None
    if wandb_run:
        wandb_run.log(record, step=record["step"])


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


def build_model(cfg, checkpoint=None):
    """The GPT to train: a checkpoint's architecture, GPT-2 weights to fine-tune, or a fresh one from cfg."""
    if checkpoint is not None:
        return GPT(gpt_config_from_dict(checkpoint["model_config"]))
    if cfg.init_from != "scratch":
        return from_pretrained(cfg.init_from)  # fine-tuning: the weights set the model's shape
    return GPT(cfg.model_config())


def configure_adamw(model, weight_decay, learning_rate, betas, device_type):
    """AdamW with weight decay on 2-D weights (matmuls, embeddings) only, not on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # the fused kernel is one launch for all parameters; CUDA only
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == "cuda")


def build_optimizer(model, cfg, device_type):
    if cfg.optimizer == "muon":
        return configure_muon(model, cfg.muon_lr, cfg.muon_momentum, cfg.max_lr, cfg.embedding_lr,
                              cfg.weight_decay, (cfg.beta1, cfg.beta2), device_type, compile_newton_schulz=cfg.compile)
    return configure_adamw(model, cfg.weight_decay, cfg.max_lr, (cfg.beta1, cfg.beta2), device_type)


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


def load_benchmarks(cfg):
    """The zero-shot benchmarks to score at every eval, as {log key: (examples, metric)}; missing data is an error."""
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
    out = generate(model, torch.tensor([prompt], device=device), cfg.sample_tokens, temperature=0.8, top_k=50)
    return enc.decode(out[0, 1:].tolist())
