"""
Checkpoints: train.py's ckpt.pt, written and read back, and the one way every program loads a model: a ckpt.pt
or GPT-2's weights from Hugging Face (hf.py), chosen by a checkpoint path or --hf on the command line.

    from cheapgpt2.checkpoint import load_model
    model = load_model("out/baseline/ckpt.pt", device="cuda")   # or load_model(hf="gpt2")
"""

import os
from dataclasses import fields

import torch

from cheapgpt2.common import atomic_write
from cheapgpt2.hf import from_pretrained
from cheapgpt2.model import GPT, GPTConfig


def save_checkpoint(path, checkpoint):
    """Atomic: a preemption or a full disk mid-write leaves the previous checkpoint intact and no temporary file."""
    try:
        with atomic_write(path) as f:
            torch.save(checkpoint, f)
    except OSError as e:
        kept = "the previous checkpoint is intact" if os.path.exists(path) else "no checkpoint was kept"
        raise OSError(f"could not write the checkpoint {path} ({e.strerror or e}); {kept}; "
                      f"free some disk space and rerun the same command to resume") from None


def gpt_config_from_dict(d):
    """GPTConfig from a dict (a checkpoint's model config); unknown keys are an error, not ignored."""
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"model config has unknown fields {unknown}; was it written by a newer version of model.py?")
    return GPTConfig(**d)


def read_checkpoint(path, device="cpu"):
    """The dict of a ckpt.pt written by train.py; one clear error for a missing, unreadable or foreign file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one with `python train.py configs/NAME.py`")
    try:
        # weights_only: a checkpoint is tensors and plain Python values, never pickled code
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a checkpoint torch can read ({type(e).__name__}); "
                         f"pass the ckpt.pt that train.py wrote, or delete a damaged one") from None
    if not isinstance(checkpoint, dict) or not {"model", "model_config"} <= checkpoint.keys():
        raise ValueError(f"{path} is not a checkpoint written by train.py (it has no 'model' and 'model_config')")
    return checkpoint


def load_checkpoint(path, device="cpu"):
    """(model, checkpoint dict) from a ckpt.pt written by train.py."""
    checkpoint = read_checkpoint(path, device)
    model = GPT(gpt_config_from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device), checkpoint


def add_model_arguments(parser, verb="load"):
    """The checkpoint / --hf pair of every command that loads a model; model_arguments_error checks it."""
    parser.add_argument("checkpoint", nargs="?", help="a ckpt.pt written by train.py (or give --hf)")
    parser.add_argument("--hf", metavar="ID_OR_DIR", help=f"{verb} GPT-2's weights instead: a Hugging Face id (gpt2, gpt2-medium, ...) "
                        "or a directory saved by transformers")


def model_arguments_error(args):
    """The one-line error when not exactly one of checkpoint and --hf was given, else None."""
    if (args.checkpoint is None) == (args.hf is None):
        return "give a checkpoint path or --hf ID_OR_DIR (exactly one of them)"
    return None


def load_model(checkpoint=None, hf=None, device="cpu"):
    """A GPT from train.py's ckpt.pt, or GPT-2 weights from a Hugging Face id or a directory saved by transformers."""
    model = from_pretrained(hf) if hf is not None else load_checkpoint(checkpoint, device)[0]
    return model.to(device).eval()
