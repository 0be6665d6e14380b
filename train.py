"""
Train GPT-2 or one of its variants: one GPU, several through torchrun (DDP), or the CPU.

    python train.py configs/baseline.py
    python train.py configs/demo_cpu.py --max_steps=100 --out_dir=out/demo
    torchrun --standalone --nproc_per_node=8 train.py configs/rotational_pos_emb.py

A config file is flat Python assignments (`max_lr = 1.8e-3`) over the defaults of TrainConfig below;
`--key=value` overrides it. Re-running the same command resumes from out_dir/ckpt.pt. SIGTERM or
Ctrl-C finishes the current step, writes the checkpoint and exits 0.
"""

import argparse
import ast
import dataclasses
import difflib
import json
import math
import os
import platform
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data import ShardLoader, read_jsonl
from model import GPT, GPTConfig, H100_BF16_PEAK_FLOPS, gpt_config_from_dict, read_checkpoint
from muon import configure_muon
from multiple_choice import evaluate, load_examples
from tokenizer import get_encoding, EOT_TOKEN


@dataclass
class TrainConfig(GPTConfig):
    """Every training key; the model's keys (GPTConfig's fields, validated there) come first."""
    out_dir: str = "out/baseline"
    data_dir: str = "data/fineweb_edu"
    init_from: str = "scratch"  # "scratch", or a GPT-2 Hugging Face id / local transformers directory
    # batch: micro-batch of batch_size x block_size tokens, accumulated up to total_batch_size tokens per step
    batch_size: int = 64
    total_batch_size: int = 524288  # 2**19 tokens, GPT-3 paper's 0.5M for 125M models
    # optimisation
    max_steps: int = 5722  # 3.0B tokens at 524,288 tokens per step
    max_lr: float = 6e-4
    min_lr_ratio: float = 0.1  # the schedule ends at max_lr * min_lr_ratio
    warmup_steps: int = 715
    lr_schedule: str = "cosine"  # "cosine", or "wsd": warmup, constant, then linear decay
    wsd_decay_fraction: float = 0.2  # wsd: the last fraction of max_steps decays linearly
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 turns clipping off
    optimizer: str = "adamw"  # "adamw"; "muon": Muon for the blocks' matrices, AdamW at max_lr for the rest (muon.py)
    muon_lr: float = 0.02  # muon: the peak learning rate of the Muon matrices, scheduled like max_lr
    muon_momentum: float = 0.95  # muon: Nesterov momentum of Muon
    embedding_lr: float = 6e-4  # muon: the AdamW peak learning rate of an untied input embedding and position table
    # evaluation, logging, checkpoints
    eval_interval: int = 250
    eval_tokens: int = 10485760  # validation loss on this many tokens from the start of the val shards
    # zero-shot benchmarks at every eval: "" skips, "hf" streams the Hugging Face copy, else a local .jsonl
    csqa_data: str = ""  # logged as csqa_acc, in csqa_format
    csqa_format: str = "plain"  # plain: golark/train_gpt's protocol, GPT-2 124M 28.26%; cloze or mc (eval_commonsense_qa.py)
    hellaswag_data: str = ""  # logged as hellaswag_acc_norm
    eval_limit: int = 1000  # questions per benchmark (the first ones; 0: all)
    log_interval: int = 10
    ckpt_interval: int = 500
    sample_prompt: str = "Hello, I'm a language model,"
    sample_tokens: int = 64  # 0: no sample at the end
    wandb_project: str = ""  # log to Weights & Biases too when set and wandb is installed
    # system
    seed: int = 1337
    device: str = "auto"  # "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:1", ...
    dtype: str = "bfloat16"  # autocast dtype on CUDA and CPU; "float32" turns autocast off
    compile: bool = True
    gpu_hourly_cost: float = 3.0  # dollars per GPU-hour, for the cost column
    peak_flops: float = H100_BF16_PEAK_FLOPS  # per device, for MFU

    def __post_init__(self):
        super().__post_init__()
        choices = {"lr_schedule": ("cosine", "wsd"), "dtype": ("bfloat16", "float32"), "optimizer": ("adamw", "muon")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"config: {key} must be one of {allowed}, got {getattr(self, key)!r}")
        positive = ("batch_size", "total_batch_size", "max_steps", "eval_interval", "log_interval", "ckpt_interval", "max_lr",
                    "muon_lr", "embedding_lr")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"config: {key} must be positive, got {getattr(self, key)}")
        if not 0 <= self.min_lr_ratio <= 1 or not 0 < self.wsd_decay_fraction <= 1:
            raise ValueError("config: min_lr_ratio must be in [0, 1] and wsd_decay_fraction in (0, 1]")

    def model_config(self):
        return GPTConfig(**{f.name: getattr(self, f.name) for f in fields(GPTConfig)})


# -----------------------------------------------------------------------------
# config loading: flat `key = literal` files, then --key=value overrides, both checked against TrainConfig

def parse_config_file(path):
    """{key: value} from a file of `key = literal` lines; anything else is an error naming the line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist; see configs/ for the variants")
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{path}:{node.lineno}: only `key = value` assignments are allowed in a config file")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{path}:{node.lineno}: the value of {node.targets[0].id} must be a literal "
                             f"(a number, string or True/False), not an expression") from None
    return values


def parse_override(field, text):
    """The text of a --key=value override as the field's type."""
    if field.type is bool:
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise ValueError(f"--{field.name} takes True or False, got {text!r}")
    try:
        return field.type(text)
    except ValueError:
        raise ValueError(f"--{field.name} takes a {field.type.__name__}, got {text!r}") from None


def load_config(path=None, overrides=()):
    """TrainConfig from a config file and `--key=value` overrides, every key and type checked."""
    known = {f.name: f for f in fields(TrainConfig)}

    def check_key(key):
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise ValueError(f"unknown config key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                               "; `python train.py --help` lists the keys"))
    values = parse_config_file(path) if path else {}
    for key, value in values.items():
        check_key(key)
        expected = known[key].type
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ValueError(f"{path}: {key} must be a {expected.__name__}, got {value!r}")
        values[key] = value
    for override in overrides:
        if not override.startswith("--") or "=" not in override:
            raise ValueError(f"cannot parse {override!r}: overrides are written --key=value")
        key, text = override[2:].split("=", 1)
        check_key(key)
        values[key] = parse_override(known[key], text)
    return TrainConfig(**values)


# -----------------------------------------------------------------------------
# pure pieces of the loop

def learning_rate(step, cfg):
    """Linear warmup, then cosine or warmup-stable-decay (wsd) down to max_lr * min_lr_ratio at max_steps."""
    min_lr = cfg.max_lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return cfg.max_lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.max_lr - min_lr)
    decay_start = max(cfg.warmup_steps, cfg.max_steps - round(cfg.wsd_decay_fraction * cfg.max_steps))
    if step < decay_start:
        return cfg.max_lr
    progress = min(1.0, (step + 1 - decay_start) / max(1, cfg.max_steps - decay_start))
    return cfg.max_lr + progress * (min_lr - cfg.max_lr)


def rng_state():
    """Every random generator a resumed run needs, as tensors and plain values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, checkpoint):
    """Atomic: a preemption mid-write leaves the previous checkpoint intact."""
    tmp_path = path + ".tmp"
    torch.save(checkpoint, tmp_path)
    os.replace(tmp_path, path)


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


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its step, checkpoints and exits (spot preemption)."""

    def __init__(self):
        self.requested = False
        self.previous_handlers = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore(self):
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: finishing this step, then writing the checkpoint", flush=True)


# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Train GPT-2 or a variant. Overrides: --key=value for any key below.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="keys and defaults:\n" + "\n".join(f"  {f.name} = {f.default!r}" for f in fields(TrainConfig)))
    parser.add_argument("config", nargs="?", help="a config file from configs/, e.g. configs/baseline.py")
    args, overrides = parser.parse_known_args(argv)
    try:
        spaced = [a for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--") and "=" not in a]
        if spaced:  # else argparse would take `--max_steps 10`'s 10 for the config file
            raise ValueError(f"cannot parse {spaced[0]!r}: overrides are written --key=value")
        cfg = load_config(args.config, overrides)
        return train(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def train(cfg):
    # --- distributed setup: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.device == "auto":
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    else:
        device = cfg.device
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if ddp:
        if device_type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    master = rank == 0
    log = print if master else (lambda *a, **k: None)

    tokens_per_micro_step = cfg.batch_size * cfg.block_size * world_size
    if cfg.total_batch_size % tokens_per_micro_step != 0:
        raise ValueError(f"total_batch_size={cfg.total_batch_size} must be a multiple of batch_size*block_size*GPUs "
                         f"= {cfg.batch_size}*{cfg.block_size}*{world_size}; change batch_size or total_batch_size")
    grad_accum_steps = cfg.total_batch_size // tokens_per_micro_step

    # --- resume, or start fresh
    ckpt_path = os.path.join(cfg.out_dir, "ckpt.pt")
    checkpoint = None
    if os.path.exists(ckpt_path):
        checkpoint = read_checkpoint(ckpt_path)
        log(f"resuming from {ckpt_path} at step {checkpoint['step']} ({checkpoint['tokens']:,} tokens seen)")
    log("config:", json.dumps(dataclasses.asdict(cfg)))
    if master:
        os.makedirs(cfg.out_dir, exist_ok=True)
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:  # plus where it ran, for the plots
            json.dump({**dataclasses.asdict(cfg), "hardware": describe_hardware(device_type, world_size)}, f, indent=2)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if device_type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls that remain
    if checkpoint is not None:
        check_resumable(checkpoint, cfg, ckpt_path)
        model = GPT(gpt_config_from_dict(checkpoint["model_config"]))
    elif cfg.init_from != "scratch":
        model = GPT.from_pretrained(cfg.init_from)  # fine-tuning: the weights set the model's shape
    else:
        model = GPT(cfg.model_config())
    model.to(device)
    if cfg.optimizer == "muon":
        optimizer = configure_muon(model, cfg.muon_lr, cfg.muon_momentum, cfg.max_lr, cfg.embedding_lr,
                                   cfg.weight_decay, (cfg.beta1, cfg.beta2), device_type)
    else:
        optimizer = model.configure_optimizer(cfg.weight_decay, cfg.max_lr, (cfg.beta1, cfg.beta2), device_type)
    train_loader = ShardLoader(cfg.data_dir, "train", cfg.batch_size, cfg.block_size, rank, world_size)
    val_loader = ShardLoader(cfg.data_dir, "val", cfg.batch_size, cfg.block_size, rank, world_size)
    start_step, tokens_seen, elapsed_seconds = 0, 0, 0.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        train_loader.load_state_dict(checkpoint["train_loader"])
        set_rng_state(checkpoint["rng"])
        start_step, tokens_seen, elapsed_seconds = checkpoint["step"], checkpoint["tokens"], checkpoint["elapsed_seconds"]
    raw_model = model  # the uncompiled, unwrapped module: its state_dict has no _orig_mod./module. prefix
    if cfg.compile:
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[torch.device(device).index] if device_type == "cuda" else None)
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")

    benchmarks = load_benchmarks(cfg) if master else {}  # {log key: (examples, metric)}
    log_path = os.path.join(cfg.out_dir, "log.jsonl")
    if master:
        drop_log_records_after(log_path, start_step)  # a resumed run re-logs the steps after its checkpoint
    wandb_run = start_wandb(cfg) if master and cfg.wandb_project else None

    def write_log(record):
        if master:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if wandb_run:
                wandb_run.log(record, step=record["step"])

    def evaluate_val_loss():
        model.eval()
        val_loader.reset()
        # never more than one pass over the val shards: repeating tokens would only reweight them
        eval_steps = max(1, min(cfg.eval_tokens // tokens_per_micro_step, val_loader.steps_per_epoch))
        total = torch.zeros((), device=device)
        with torch.no_grad():
            for _ in range(eval_steps):
                x, y = val_loader.next_batch()
                with autocast:
                    total += model(x.to(device), y.to(device))[1]
        if ddp:
            dist.all_reduce(total, op=dist.ReduceOp.AVG)
        model.train()
        return total.item() / eval_steps

    def checkpoint_now(step):
        if master:
            save_checkpoint(ckpt_path, {
                "model": raw_model.state_dict(), "model_config": dataclasses.asdict(raw_model.config),
                "train_config": dataclasses.asdict(cfg), "optimizer": optimizer.state_dict(),
                "step": step, "tokens": tokens_seen, "elapsed_seconds": elapsed_seconds,
                "train_loader": train_loader.state_dict(), "rng": rng_state(),
            })

    log(f"{raw_model.num_params():,} parameters | {grad_accum_steps} micro-steps of {cfg.batch_size}x{cfg.block_size} "
        f"tokens x {world_size} process(es) per step | device {device} | {max(0, cfg.max_steps - start_step)} steps to go")
    stop = StopFlag()
    step = start_step
    val_loss = None
    while True:
        if step % cfg.eval_interval == 0 or step >= cfg.max_steps:
            val_loss = evaluate_val_loss()
            record = {"step": step, "tokens": tokens_seen, "val_loss": val_loss}
            if master:  # the benchmarks are small: rank 0 scores them on the uncompiled model
                for key, (examples, metric) in benchmarks.items():
                    record[key] = evaluate(raw_model, examples, device, batch_size=cfg.batch_size)[metric]
            log(f"step {step:5d} | " + " | ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items()
                                                 if k not in ("step", "tokens")))
            write_log(record)
        if step >= cfg.max_steps:  # a checkpoint past a lowered max_steps stops here too
            break

        t0 = time.time()
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # muon: each group's peak over max_lr
        loss_sum = torch.zeros((), device=device)
        for micro_step in range(grad_accum_steps):
            x, y = train_loader.next_batch()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # DDP: all-reduce gradients only on the last micro-step
            sync = nullcontext() if not ddp or micro_step == grad_accum_steps - 1 else model.no_sync()
            with sync:
                with autocast:
                    loss = model(x, y)[1] / grad_accum_steps
                loss.backward()
            loss_sum += loss.detach()
        if ddp:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_loss = loss_sum.item()  # waits for the device, so the timing below is real
        step_seconds = time.time() - t0
        step += 1
        tokens_seen += cfg.total_batch_size
        elapsed_seconds += step_seconds

        if step % cfg.log_interval == 0 or step == cfg.max_steps:
            tok_per_s = cfg.total_batch_size / step_seconds
            mfu = raw_model.estimate_mfu(tok_per_s / world_size, cfg.peak_flops)
            dollars = elapsed_seconds / 3600 * cfg.gpu_hourly_cost * world_size
            mfu_text = f" | MFU {mfu * 100:.1f}%" if device_type == "cuda" else ""  # peak_flops is a GPU's
            log(f"step {step:5d}/{cfg.max_steps} | loss {train_loss:.4f} | lr {lr:.2e} | norm {grad_norm:.3f} | "
                f"{step_seconds * 1000:.0f} ms | {tok_per_s:,.0f} tok/s{mfu_text} | ${dollars:.2f}")
            write_log({"step": step, "tokens": tokens_seen, "train_loss": train_loss, "lr": lr,
                       "grad_norm": grad_norm.item(), "tok_per_s": tok_per_s, "mfu": mfu,
                       "elapsed_seconds": elapsed_seconds, "dollars": dollars})
        stop_now = torch.tensor(float(stop.requested), device=device)
        if ddp:  # every rank stops at the same step
            dist.all_reduce(stop_now, op=dist.ReduceOp.MAX)
        if stop_now.item() or step % cfg.ckpt_interval == 0 or step == cfg.max_steps:
            checkpoint_now(step)
        if stop_now.item():
            log(f"stopped at step {step}; checkpoint in {ckpt_path}; run the same command to resume")
            break

    if step >= cfg.max_steps and master:
        log(f"done: {step} steps, {tokens_seen:,} tokens, final val loss {val_loss:.4f}, "
            f"{elapsed_seconds / 60:.1f} min, ${elapsed_seconds / 3600 * cfg.gpu_hourly_cost * world_size:.2f}")
        if cfg.sample_tokens > 0:
            log("sample:", sample_text(raw_model, cfg, device))
    stop.restore()
    if wandb_run:
        wandb_run.finish()
    if ddp:
        dist.destroy_process_group()
    return 0


def load_benchmarks(cfg):
    """The zero-shot benchmarks to score at every eval, as {log key: (examples, metric)}; missing data is an error."""
    from multiple_choice import CSQA_FORMATS  # here, not at the top: this function is all that uses it
    if cfg.csqa_format not in CSQA_FORMATS:
        raise ValueError(f"csqa_format={cfg.csqa_format!r} is not one of {sorted(CSQA_FORMATS)} (eval_commonsense_qa.py's --format)")
    wanted = {"csqa_acc": (CSQA_FORMATS[cfg.csqa_format], cfg.csqa_data, "acc"),
              "hellaswag_acc_norm": ("hellaswag", cfg.hellaswag_data, "acc_norm")}
    return {key: (load_examples(task, None if data == "hf" else data, cfg.eval_limit or None), metric)
            for key, (task, data, metric) in wanted.items() if data}


def drop_log_records_after(log_path, step):
    """Keep what log.jsonl says up to a checkpoint at `step`, so a resumed run's log reads as one run:
    training records up to `step` (the checkpoint holds their updates), evaluations before `step`
    (the resumed run evaluates at `step` again)."""
    if not os.path.exists(log_path):
        return
    records = [record for _, record in read_jsonl(log_path)]
    kept = [r for r in records if r["step"] < step or (r["step"] == step and "val_loss" not in r)]
    with open(log_path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(log_path + ".tmp", log_path)


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
