"""
Train GPT-2 or one of its variants: one GPU, several through torchrun (DDP), or the CPU.

    python train.py configs/baseline.py
    python train.py configs/demo_cpu.py --max_steps=100 --out_dir=out/demo
    .venv/bin/torchrun --standalone --nproc_per_node=8 train.py configs/rotational_pos_emb.py
    python train.py configs/gpt2_xl.py --dry_run      # memory per GPU, fit, hours and dollars; nothing trained

A config file is flat Python assignments (`max_lr = 1.8e-3`) over the defaults of TrainConfig (cheapgpt2/config.py);
`--key=value` overrides it. Re-running the same command resumes from out_dir/ckpt.pt. SIGTERM or
Ctrl-C finishes the current step, writes the checkpoint and exits 130/143 (128 + the signal), so that
a Makefile or a job script stops there; a run that reached max_steps exits 0. With parallelism="fsdp" the
model is sharded over the GPUs (FSDP2) and the checkpoint is the directory out_dir/ckpt (cheapgpt2/distributed.py).
"""

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from dataclasses import fields

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from cheapgpt2 import distributed
from cheapgpt2.checkpoint import save_checkpoint
from cheapgpt2.common import atomic_write, describe_hardware, make_out_dir, pick_device, process_start_time
from cheapgpt2.config import TrainConfig, field_comments, load_config
from cheapgpt2.data import ShardLoader
from cheapgpt2.estimate import estimate, estimate_mfu, format_report
from cheapgpt2.training import (StepTimer, StopFlag, append_log, attention_window, benchmark_accuracy, build_model,
                                build_optimizer, check_cpu_can_train, check_resumable, compiled_graphs,
                                drop_log_records_after, learning_rate, load_benchmarks, muon_momentum, peak_flops_of,
                                raise_if_diverged, read_any_checkpoint, rng_state, sample_text, set_rng_state,
                                start_wandb, stop_agreed, train_step)

LAUNCH_TIME = process_start_time()  # the cost of a run counts from its launch: the imports above included


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
            print(format_report(args.config or "the defaults", estimate(cfg, gpus=(1, 8))))
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
    # torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(cfg.device, local_rank, world_size > 1)
    check_cpu_can_train(cfg, device)
    if world_size > 1:
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    stop = StopFlag()
    try:
        return run(cfg, device, rank, world_size, stop)
    finally:
        stop.restore()
        if world_size > 1:
            dist.destroy_process_group()


def run(cfg, device, rank, world_size, stop):
    """Set up, then step until max_steps or a requested stop: evaluation every eval_interval steps, a log line
    every log_interval, a checkpoint every ckpt_interval and on the stop. Only those steps wait for the device."""
    master = rank == 0
    log = print if master else (lambda *args: None)
    device_type = torch.device(device).type
    fsdp = cfg.parallelism == "fsdp"  # sharded checkpoints (out_dir/ckpt) even in one process, to resume anywhere
    sharded = fsdp and world_size > 1  # in one process FSDP has nothing to shard: the plain model
    ddp = world_size > 1 and not fsdp
    tokens_per_micro_step = cfg.batch_size * cfg.block_size * world_size
    if cfg.total_batch_size % tokens_per_micro_step != 0:
        raise ValueError(f"total_batch_size={cfg.total_batch_size} must be a multiple of batch_size*block_size*GPUs "
                         f"= {cfg.batch_size}*{cfg.block_size}*{world_size}; change batch_size or total_batch_size")
    grad_accum_steps = cfg.total_batch_size // tokens_per_micro_step
    ckpt_path = os.path.join(cfg.out_dir, "ckpt" if fsdp else "ckpt.pt")
    log_path = os.path.join(cfg.out_dir, "log.jsonl")

    # --- set-up; nothing is written to out_dir until all of it has been checked (a failed command never changes
    # a finished run's files)
    checkpoint = read_any_checkpoint(ckpt_path, fsdp)
    if checkpoint is not None:
        check_resumable(checkpoint, cfg, ckpt_path)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if device_type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the float32 matmuls that remain
    raw_model = build_model(cfg, checkpoint).to(device)  # unwrapped: its state_dict has no _orig_mod./module. prefix
    raw_model.activation_checkpointing = cfg.activation_checkpointing
    if sharded:  # bfloat16 weights gathered for compute, float32 gradient reduction and optimizer
        distributed.shard_model(raw_model, param_dtype=torch.bfloat16 if cfg.dtype == "bfloat16" else None,
                                compile_blocks=cfg.compile)
    optimizer = build_optimizer(raw_model, cfg, device_type)  # after sharding: it holds the sharded parameters
    vocab_size = raw_model.config.vocab_size
    train_loader = ShardLoader(cfg.data_dir, "train", cfg.batch_size, cfg.block_size, rank, world_size, vocab_size)
    val_loader = ShardLoader(cfg.data_dir, "val", cfg.batch_size, cfg.block_size, rank, world_size, vocab_size)
    step, tokens_seen = 0, 0
    wall_seconds_before, train_seconds = 0.0, 0.0  # of the runs before this resume: all of it, and the steps only
    if checkpoint is not None:  # weights, optimizer, data position, random state and counters
        if fsdp:  # DCP reshards to this run's number of processes
            distributed.load_sharded_checkpoint(ckpt_path, raw_model, optimizer)
        else:
            raw_model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        train_loader.load_state_dict(checkpoint["train_loader"])
        set_rng_state(checkpoint["rng"], device)
        step, tokens_seen = checkpoint["step"], checkpoint["tokens"]
        wall_seconds_before = checkpoint["elapsed_seconds"]
        train_seconds = checkpoint.get("train_seconds", wall_seconds_before)  # older checkpoints: step time only
    benchmarks = load_benchmarks(cfg)  # {log key: (examples, metric)}; every rank scores its share

    # --- the run starts: now out_dir may be written
    if master:
        make_out_dir(cfg.out_dir)
        config_record = {**dataclasses.asdict(cfg), "hardware": describe_hardware(device_type, world_size)}
        with atomic_write(os.path.join(cfg.out_dir, "config.json")) as f:  # what the plots label the run with
            f.write(json.dumps(config_record, indent=2).encode())
        if checkpoint is not None:
            log(f"resuming from {ckpt_path} at step {step} ({tokens_seen:,} tokens seen)")
            drop_log_records_after(log_path, step)  # a resumed run re-logs the steps after its checkpoint
    log("config:", json.dumps(dataclasses.asdict(cfg)))
    model = raw_model  # what the steps call: DDP-wrapped and compiled where asked
    if ddp:
        # broadcast_buffers=False: the only buffers are the RoPE tables, derived from the config on every rank
        model = DDP(model, device_ids=[torch.device(device).index] if device_type == "cuda" else None,
                    broadcast_buffers=False)
    if cfg.compile and not sharded:  # sharded: shard_model compiled each block
        # compiled around DDP: Dynamo's DDPOptimizer, on whenever a graph runs inside DDP's forward, splits it at
        # DDP's gradient buckets, so that each bucket's all-reduce overlaps the backward of the graphs before it
        # (one fused backward would hand DDP every gradient at its end); tests/test_compile.py sees the split
        model = torch.compile(model)
    graphs_before = compiled_graphs() if cfg.compile else 0  # a rise after the first step is a recompile
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    wandb_run = start_wandb(cfg) if master and cfg.wandb_project else None
    peak_flops = peak_flops_of(cfg, device)  # None: MFU is not reported
    if device_type == "cuda" and peak_flops is None:
        log(f"MFU not reported: no peak FLOP/s known for {torch.cuda.get_device_name(device)}; set --peak_flops")
    log(f"{raw_model.num_params():,} parameters | {grad_accum_steps} micro-steps of {cfg.batch_size}x"
        f"{cfg.block_size} tokens x {world_size} process(es) per step | device {device} | "
        f"{max(0, cfg.max_steps - step)} steps to go")
    # never more than one pass over the val shards: repeating tokens would only reweight them
    eval_steps = max(1, min(cfg.eval_tokens // tokens_per_micro_step, val_loader.steps_per_epoch))

    def elapsed_seconds():  # wall-clock since this run's first launch: start-up, compiling, evals, checkpoints too
        return wall_seconds_before + time.time() - LAUNCH_TIME

    def dollars():
        return elapsed_seconds() / 3600 * cfg.gpu_hourly_cost * world_size

    last_checkpoint_step = step if checkpoint is not None else None
    timer = StepTimer(device, train_seconds)  # the seconds of training steps only
    history = []  # (step, loss, grad norm) since the last check, still on the device
    val_loss, first_step_seconds, start_step = None, None, step
    while True:
        if cfg.attn_window_start:  # a growing window: the step's, for its evaluation too; a tensor: no recompile
            raw_model.attn_window.fill_(attention_window(step, cfg))

        # --- evaluation: validation loss and the benchmarks, outside the step timer
        if step % cfg.eval_interval == 0 or step >= cfg.max_steps:
            timer.pause()
            raise_if_diverged(history, ckpt_path, last_checkpoint_step)
            history = []
            val_loss = evaluate_val_loss(model, val_loader, eval_steps, device, autocast, world_size)
            record = {"step": step, "tokens": tokens_seen, "val_loss": val_loss}
            for key, (examples, metric) in benchmarks.items():  # on the raw model, a share on every rank
                # (sharded: every rank runs every forward, whose weights are gathered from all of them); eager, as
                # the compiled blocks of a sharded model would recompile for the questions' every length
                with torch.compiler.set_stance("force_eager"):
                    record[key] = benchmark_accuracy(raw_model, examples, metric, device, cfg.batch_size,
                                                     *((0, 1) if sharded else (rank, world_size)))
            log(f"step {step:5d} | " + " | ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in record.items()
                                                  if k not in ("step", "tokens")))
            if master:
                append_log(log_path, record, ckpt_path, wandb_run)
            timer.resume()
        if step >= cfg.max_steps:  # a checkpoint past a lowered max_steps stops here too
            break

        # --- one optimizer step; nothing here waits for the device
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # muon: each group's peak over max_lr
            if "momentum" in group:  # Muon's groups (AdamW's have betas)
                group["momentum"] = muon_momentum(step, cfg)
        loss, grad_norm = train_step(model, optimizer, train_loader.next_batch, grad_accum_steps, device,
                                     autocast, cfg.grad_clip, ddp, fsdp=sharded)
        step += 1
        tokens_seen += cfg.total_batch_size
        history.append((step, loss, grad_norm))
        timer.steps += 1
        if step == start_step + 1:
            # this process's first step compiles the training graph (and warms up the GPU): timed apart, so that
            # tok_per_s, mfu and train_seconds are the steady rate, as nanoGPT's; elapsed_seconds and dollars keep it
            first_step_seconds = timer.discard_interval()

        log_now = step % cfg.log_interval == 0 or step == cfg.max_steps
        checkpoint_step = step % cfg.ckpt_interval == 0 or step == cfg.max_steps
        stop_now = stop_agreed(stop, step, checkpoint_step, world_size, device)
        if not (log_now or checkpoint_step or stop_now):
            continue  # no wait for the device: the CPU queues the next step at once
        timer.pause()  # waits for the device, so the times below are real
        last = history[-1]
        raise_if_diverged(history, ckpt_path, last_checkpoint_step)
        history = []

        # --- the log line and record of the steps since the last one: loss, speed, MFU, dollars
        if log_now:
            seconds, steps = timer.take_interval()
            # None while only the first step has run: its time is compilation, not a rate
            tok_per_s = steps * cfg.total_batch_size / seconds if steps else None
            mfu = mfu_causal = None
            if steps and peak_flops:  # both ways: nanoGPT's FLOPs (causal attention's masked half counted), and not
                mfu = estimate_mfu(raw_model, tok_per_s / world_size, peak_flops)
                mfu_causal = estimate_mfu(raw_model, tok_per_s / world_size, peak_flops, causal=True)
            train_loss, norm = last[1].item(), last[2].item()
            speed_text = (f"{seconds / steps * 1000:.0f} ms | {tok_per_s:,.0f} tok/s" if steps else
                          f"first step {first_step_seconds:.1f} s (compiling)")
            if mfu is not None:
                speed_text += f" | MFU {mfu * 100:.1f}% ({mfu_causal * 100:.1f}% causal)"
            log(f"step {step:5d}/{cfg.max_steps} | loss {train_loss:.4f} | lr {lr:.2e} | norm {norm:.3f} | "
                f"{speed_text} | ${dollars():.2f}")
            record = {"step": step, "tokens": tokens_seen, "train_loss": train_loss, "lr": lr, "grad_norm": norm,
                      "tok_per_s": tok_per_s, "mfu": mfu, "mfu_causal": mfu_causal, "elapsed_seconds": elapsed_seconds(),
                      "train_seconds": timer.total, "dollars": dollars()}
            if first_step_seconds is not None:  # the first log line of this process says what its first step took
                record["first_step_seconds"], first_step_seconds = first_step_seconds, None
            if cfg.compile:  # steady after the first step (train and eval graphs); a rise is a recompile
                record["compiled_graphs"] = compiled_graphs() - graphs_before
            if device_type == "cuda":  # the most this process has held so far (measure/gpu_check.py reports it)
                record["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            if master:
                append_log(log_path, record, ckpt_path, wandb_run)

        # --- the checkpoint: everything a resume needs, at this step
        if checkpoint_step or stop_now:
            state = {"model_config": dataclasses.asdict(raw_model.config), "train_config": dataclasses.asdict(cfg),
                     "step": step, "tokens": tokens_seen, "elapsed_seconds": elapsed_seconds(),
                     "train_seconds": timer.total, "train_loader": train_loader.state_dict(), "rng": rng_state(device)}
            if fsdp:  # every rank writes its shards
                distributed.save_sharded_checkpoint(ckpt_path, raw_model, optimizer, state)
            elif master:
                save_checkpoint(ckpt_path, {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), **state})
            last_checkpoint_step = step
        timer.resume()
        if stop_now:
            log(f"stopped at step {step}; checkpoint in {ckpt_path}; run the same command to resume")
            break

    # --- the end: the summary line and a sample after max_steps
    if step >= cfg.max_steps:
        log(f"done: {step} steps, {tokens_seen:,} tokens, final val loss {val_loss:.4f}, "
            f"{elapsed_seconds() / 60:.1f} min since launch ({timer.total / 60:.1f} of them training steps), "
            f"${dollars():.2f}")
        if cfg.sample_tokens > 0 and (master or sharded):  # sharded: every rank takes part in each forward
            with torch.compiler.set_stance("force_eager"):  # one token at a time: no graph to gain from
                log("sample:", sample_text(raw_model, cfg, device))
    if wandb_run:
        wandb_run.finish()
    return 0 if step >= cfg.max_steps else 128 + stop.signal


def evaluate_val_loss(model, val_loader, eval_steps, device, autocast, world_size):
    """The mean loss of eval_steps batches from the start of the validation shards, averaged over the ranks."""
    model.eval()
    val_loader.reset()
    total = torch.zeros((), device=device)
    with torch.no_grad():
        for _ in range(eval_steps):
            x, y = val_loader.next_batch()
            with autocast:
                total += model(x.to(device), y.to(device))[1]
    if world_size > 1:
        dist.all_reduce(total, op=dist.ReduceOp.AVG)
    model.train()
    return total.item() / eval_steps


if __name__ == "__main__":
    sys.exit(main())
