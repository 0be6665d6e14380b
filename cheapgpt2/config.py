"""
The training config: TrainConfig's typed defaults (the model's keys from GPTConfig first), and the loader of
flat `key = literal` config files with `--key=value` overrides, every key and type checked. No exec: a config
file is parsed, never run. train.py, estimate.py, variants.py and the benchmarks all read configs through here.

    from cheapgpt2.config import load_config
    cfg = load_config("configs/baseline.py", ["--max_steps=100"])
"""

import ast
import dataclasses
import difflib
import inspect
import os
import re
from dataclasses import dataclass, fields

from cheapgpt2.model import GPTConfig


@dataclass
class TrainConfig(GPTConfig):
    """Every training key; the model's keys (GPTConfig's fields, validated there) come first."""
    out_dir: str = "out/baseline"  # checkpoint, log.jsonl and config.json; rerunning resumes from it
    data_dir: str = "data/fineweb_edu"  # token shards written by prepare_data.py
    init_from: str = "scratch"  # "scratch", or a GPT-2 Hugging Face id / local transformers directory
    # batch: micro-batch of batch_size x block_size tokens, accumulated up to total_batch_size tokens per step
    batch_size: int = 64  # sequences per micro-batch on each GPU; lower it if memory runs out (steps stay the same)
    total_batch_size: int = 524288  # tokens per optimizer step: 2**19, GPT-3 paper's 0.5M for 125M models
    # optimisation
    max_steps: int = 5722  # optimizer steps: 3.0B tokens at 524,288 tokens per step
    max_lr: float = 6e-4  # peak learning rate of AdamW (with muon: of the head and the gains)
    min_lr_ratio: float = 0.1  # the schedule ends at max_lr * min_lr_ratio
    warmup_steps: int = 715  # steps of linear warmup from max_lr/warmup_steps to max_lr
    lr_schedule: str = "cosine"  # "cosine", or "wsd": warmup, constant, then linear decay
    wsd_decay_fraction: float = 0.2  # wsd: the last fraction of max_steps decays linearly
    weight_decay: float = 0.1  # decoupled weight decay of the 2-D weights (AdamW's and Muon's)
    beta1: float = 0.9  # AdamW's first-moment decay
    beta2: float = 0.95  # AdamW's second-moment decay
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 turns clipping off
    optimizer: str = "adamw"  # "adamw"; "muon": Muon for the blocks' matrices, AdamW at max_lr for the rest (muon.py)
    muon_lr: float = 0.02  # muon: the peak learning rate of the Muon matrices, scheduled like max_lr
    muon_momentum: float = 0.95  # muon: Nesterov momentum of Muon
    muon_momentum_warmup_steps: int = 0  # muon: > 0: the momentum rises linearly from 0.85 to muon_momentum over these steps
    attn_window_start: int = 0  # > 0 with attn_window: the window grows linearly from this to attn_window over the run
    embedding_lr: float = 6e-4  # muon: the AdamW peak learning rate of an untied input embedding and position table
    # evaluation, logging, checkpoints
    eval_interval: int = 250  # steps between validation losses (and benchmarks)
    eval_tokens: int = 10485760  # validation loss on this many tokens from the start of the val shards
    # zero-shot benchmarks at every eval: "" skips, "hf" streams the Hugging Face copy, else a local .jsonl
    csqa_data: str = ""  # CommonsenseQA ("", "hf" or a .jsonl), logged as csqa_acc in csqa_format
    csqa_format: str = "plain"  # plain: golark/train_gpt's protocol (GPT-2 124M: 28.26%); cloze or mc (eval_commonsense_qa.py)
    hellaswag_data: str = ""  # HellaSwag ("", "hf" or a .jsonl), logged as hellaswag_acc_norm
    eval_limit: int = 1000  # questions per benchmark (the first ones; 0: all)
    log_interval: int = 10  # steps between log lines; the only steps that wait for the GPU
    ckpt_interval: int = 500  # steps between checkpoints (and always at the end and on SIGTERM)
    sample_prompt: str = "Hello, I'm a language model,"  # the text continued at the end of training
    sample_tokens: int = 64  # tokens sampled after sample_prompt at the end; 0: none
    wandb_project: str = ""  # log to Weights & Biases too when set and wandb is installed
    # system
    seed: int = 1337  # initial weights and data order follow from it
    device: str = "auto"  # "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:1", ...
    dtype: str = "bfloat16"  # autocast dtype on CUDA and CPU; "float32" turns autocast off
    compile: bool = True  # torch.compile the model (minutes at start, faster steps)
    gpu_hourly_cost: float = 3.0  # dollars per GPU-hour: cost = wall-clock hours since launch x GPUs x this
    parallelism: str = "ddp"  # "ddp": each GPU holds the whole model; "fsdp": weights, grads, optimizer sharded (FSDP2)
    activation_checkpointing: bool = False  # recompute each block in the backward: far less memory, ~1/3 more compute
    assumed_mfu: float = 0.4  # --dry_run: the model FLOPs utilisation its hours and dollars assume
    peak_flops: float = 0.0  # the GPU's peak FLOP/s for MFU; 0: by its name (H100, H200, A100 bf16 dense), else no MFU

    def __post_init__(self):
        super().__post_init__()
        choices = {"lr_schedule": ("cosine", "wsd"), "dtype": ("bfloat16", "float32"), "optimizer": ("adamw", "muon"),
                   "parallelism": ("ddp", "fsdp")}
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
        if not 0 < self.assumed_mfu <= 1:
            raise ValueError(f"config: assumed_mfu must be in (0, 1], got {self.assumed_mfu}")
        if self.muon_momentum_warmup_steps < 0 or self.attn_window_start < 0:
            raise ValueError("config: muon_momentum_warmup_steps and attn_window_start must be 0 (off) or positive")
        if self.attn_window_start and not 0 < self.attn_window_start <= self.attn_window:
            raise ValueError(f"config: attn_window_start={self.attn_window_start} grows the window to attn_window, "
                             f"which must be at least as large (got attn_window={self.attn_window})")
        if self.peak_flops < 0:
            raise ValueError(f"config: peak_flops must be 0 (from the GPU's name) or the GPU's FLOP/s, got {self.peak_flops}")

    def model_config(self):
        return GPTConfig(**{f.name: getattr(self, f.name) for f in fields(GPTConfig)})


# -----------------------------------------------------------------------------
# config loading: flat `key = literal` files, then --key=value overrides, both checked against TrainConfig

def parse_config_file(path):
    """{key: value} from a file of `key = literal` lines; anything else is an error naming the line."""
    if os.path.isdir(path):
        raise ValueError(f"config file {path} is a directory; pass a file such as configs/baseline.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist; see configs/ for the variants")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start}); "
                         f"a config is `key = value` lines") from None
    except SyntaxError as e:
        raise ValueError(f"{path}:{e.lineno}: syntax error ({e.msg}); a config is `key = value` lines") from None
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


def field_comments(cls):
    """{field name: its comment} from the dataclasses' source, the one place the keys are explained (for --help)."""
    comments = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for line in inspect.getsource(klass).splitlines():
                match = re.match(r"\s+(\w+): \w+ = .*?  # (.*)$", line)
                if match:
                    comments[match.group(1)] = match.group(2)
    return comments
