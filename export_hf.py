"""
Export a checkpoint of GPT-2's own architecture as a Hugging Face transformers GPT2LMHeadModel directory.

    python export_hf.py out/baseline/ckpt.pt out/baseline/hf
    python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('out/baseline/hf')"
    lm_eval --model hf --model_args pretrained=out/baseline/hf --tasks hellaswag

Only GPT-2's architecture has a standard home in transformers: learned positions, GELU MLP, LayerNorm with
biases, a tied head, no QK-norm and no soft-cap (configs/baseline.py, configs/increase_max_lr.py). The other
variants (RoPE, SwiGLU, the modern options) are refused with one line; eval_lm.py scores any of them with
lm-evaluation-harness directly. The directory holds config.json, model.safetensors (float32; the vocabulary
padded to 50,304 for fast matmuls is cut back to GPT-2's 50,257 rows) and GPT-2's tokenizer files
(vocab.json, merges.txt, tokenizer_config.json) written from tiktoken's ranks, so it loads offline.
"""

import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

from cheapgpt2.checkpoint import load_checkpoint
from cheapgpt2.hf import EOT_TEXT, check_gpt2_architecture, hf_state_dict, vocab_and_merges
from cheapgpt2.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, get_encoding

def export(checkpoint_path, out_dir):
    """Write the transformers directory; refuses an out_dir that holds files, and never leaves a half-written one."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f"{out_dir} already holds files; pass a new directory (or delete it)")
    model, _ = load_checkpoint(checkpoint_path)
    cfg = model.config
    check_gpt2_architecture(cfg)
    enc = get_encoding()
    vocab, merges = vocab_and_merges(enc)

    partial = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": GPT2_VOCAB_SIZE,
        "n_positions": cfg.block_size, "n_ctx": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
        "n_head": cfg.n_head, "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
        "bos_token_id": EOT_TOKEN, "eos_token_id": EOT_TOKEN, "tie_word_embeddings": True, "torch_dtype": "float32",
    }
    tokenizer_config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": cfg.block_size, "add_prefix_space": False,
                        "bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    files = {"config.json": hf_config, "tokenizer_config.json": tokenizer_config, "vocab.json": vocab,
             "special_tokens_map.json": {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}}
    for name, content in files.items():
        with open(os.path.join(partial, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=1, ensure_ascii=False)
    with open(os.path.join(partial, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    save_file(hf_state_dict(model), os.path.join(partial, "model.safetensors"), metadata={"format": "pt"})
    if os.path.isdir(out_dir):
        os.rmdir(out_dir)  # empty, checked above
    os.replace(partial, out_dir)
    return cfg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a ckpt.pt written by train.py, of GPT-2's architecture (baseline, increase_max_lr)")
    parser.add_argument("out_dir", help="the directory to write (new or empty)")
    args = parser.parse_args(argv)
    try:
        cfg = export(args.checkpoint, args.out_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out_dir}: GPT2LMHeadModel, {cfg.n_layer} layers x {cfg.n_embd}, context {cfg.block_size}, "
          f"vocabulary {GPT2_VOCAB_SIZE}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
