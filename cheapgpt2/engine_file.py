"""
The C engine's model file (c/FORMAT.md): a 256-byte header, every tensor 64-byte aligned so that c/gpt
memory-maps the file as it is, and GPT-2's tokenizer tables at the end. As llama2.c's export.py, but for every
variant of model.py, in fp32, bf16, or quantize.py's q8_0 and q4_0 schemes (c/FORMAT.md).

    from cheapgpt2.engine_file import export
    export(model, "model.bin", dtype="q8_0", group_size=64)      # export.py is its command line
"""


import functools
import struct
import unicodedata

import numpy as np
import torch

from cheapgpt2.common import atomic_write
from cheapgpt2.model import RMS_NORM_EPS
from cheapgpt2.quantize import Q4_0_GROUP, q4_0_pack, q4_0_quantize, q8_0_quantize
from cheapgpt2.tokenizer import get_encoding

MAGIC = 0x43545047  # "GPTC" in a little-endian file
VERSION = 2  # 2: the speedrun's doc_mask, attn_window, value_embeds, unet_skips
HEADER_SIZE = 256
ALIGN = 64
TOKENIZER_MAGIC = 0x31455042  # "BPE1"
DTYPES = {"fp32": 0, "q8_0": 1, "q4_0": 2, "bf16": 3}
POS_EMB = {"learned": 0, "rope": 1}
MLPS = {"gelu": 0, "swiglu": 1, "relu2": 2}
NORMS = {"layernorm": 0, "rmsnorm": 1}
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which model.py uses


@functools.lru_cache(maxsize=2)
def tokenizer_section(enc):
    """GPT-2's tokens as bytes (id order) and the Unicode ranges of \\p{L} and \\p{N} the C pre-tokenizer needs."""
    n_vocab = enc.n_vocab
    token_bytes = [enc.decode_single_token_bytes(i) for i in range(n_vocab)]
    ranks = enc._mergeable_ranks
    if len(ranks) != n_vocab - 1 or any(ranks.get(token_bytes[i]) != i for i in range(n_vocab - 1)):
        raise ValueError(f"{enc.name}: expected ids 0..{n_vocab - 2} to be the BPE ranks and {n_vocab - 1} <|endoftext|>")

    def ranges(prefix):
        out, start = [], None
        for cp in range(0x110000 + 1):
            inside = cp < 0x110000 and unicodedata.category(chr(cp)).startswith(prefix)
            if inside and start is None:
                start = cp
            elif not inside and start is not None:
                out.append((start, cp - 1))
                start = None
        return out

    letters, numbers = ranges("L"), ranges("N")
    offsets = np.cumsum([0] + [len(b) for b in token_bytes]).astype(np.uint32)
    parts = [struct.pack("<5i", TOKENIZER_MAGIC, n_vocab, n_vocab - 1, len(letters), len(numbers)),
             np.array(letters, dtype=np.uint32).tobytes(), np.array(numbers, dtype=np.uint32).tobytes(),
             offsets.tobytes(), b"".join(token_bytes)]
    return b"".join(parts)


def model_tensors(model, dtype, group_size):
    """The tensors in the file's order: a list of numpy arrays (a quantized matrix is its values then its scales).
    The blocks' matrices are of the file's dtype; the head too, except in q4_0, where it is q8_0 in groups of 32."""
    cfg = model.config
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out = []

    def matrix(name, head=False):
        rows, cols = sd[name].shape
        if dtype in ("q8_0", "q4_0") and cols % group_size != 0:  # the command line's words for quantize.py's refusal
            raise ValueError(f"{dtype} needs in_features divisible by group_size: a {rows}x{cols} weight and group_size "
                             f"{group_size}; pick --group_size 32 or a model whose widths are multiples of it")
        if dtype == "q8_0" or (dtype == "q4_0" and head):
            q, s = q8_0_quantize(sd[name], group_size)
            out.extend([q.numpy(), s.numpy()])
        elif dtype == "q4_0":
            q, s = q4_0_quantize(sd[name])
            out.extend([q4_0_pack(q).numpy(), s.numpy()])
        elif dtype == "bf16":
            out.append(sd[name].to(torch.bfloat16).view(torch.uint16).numpy())
        else:
            out.append(sd[name].numpy())

    def vector(name):
        out.append(sd[name].numpy())

    layernorm_bias = cfg.norm == "layernorm" and cfg.bias
    if not (cfg.tie_embeddings and dtype != "fp32"):  # a tied head of another dtype is also the embedding
        vector("transformer.wte.weight")
    if cfg.pos_emb == "learned":
        vector("transformer.wpe.weight")
    if cfg.value_embeds:  # lookups, fp32 in either dtype, one after the other
        out.append(np.concatenate([sd[f"value_embeds.{t}.weight"].numpy() for t in range((cfg.n_layer + 1) // 2)]))
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        if cfg.value_embeds:
            vector(p + "attn.value_lambdas")
        vector(p + "ln_1.weight")
        if layernorm_bias:
            vector(p + "ln_1.bias")
        for lin in ["attn.c_attn", "attn.c_proj", None, "mlp.c_fc"] + (["mlp.c_gate"] if cfg.mlp == "swiglu" else []) + ["mlp.c_proj"]:
            if lin is None:
                vector(p + "ln_2.weight")
                if layernorm_bias:
                    vector(p + "ln_2.bias")
                continue
            matrix(p + lin + ".weight")
            if cfg.bias:
                vector(p + lin + ".bias")
    if cfg.unet_skips and cfg.n_layer // 2:
        vector("skip_weights")
    vector("transformer.ln_f.weight")
    if layernorm_bias:
        vector("transformer.ln_f.bias")
    if not cfg.tie_embeddings or dtype != "fp32":
        matrix("lm_head.weight", head=True)
    return out


def export(model, path, dtype="fp32", group_size=64, enc=None):
    """Write model (a model.GPT) to path in the C engine's format, atomically (temp file + rename)."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if dtype == "q8_0" and group_size not in (32, 64):
        raise ValueError(f"--group_size must be 32 or 64 (c/FORMAT.md's q8_0), got {group_size}")
    group_size = {"q8_0": group_size, "q4_0": Q4_0_GROUP}.get(dtype, 0)  # q4_0: its blocks' groups and its head's
    cfg = model.config
    enc = enc or get_encoding()
    tensors = model_tensors(model, dtype, group_size)
    tokenizer = tokenizer_section(enc)
    hidden = cfg.swiglu_hidden if cfg.mlp == "swiglu" else 4 * cfg.n_embd
    norm_eps = LAYER_NORM_EPS if cfg.norm == "layernorm" else RMS_NORM_EPS

    body, offset = [], HEADER_SIZE
    for t in tensors + [np.frombuffer(tokenizer, dtype=np.uint8)]:
        pad = -offset % ALIGN
        body.append(b"\0" * pad)
        offset += pad
        data = np.ascontiguousarray(t).tobytes()
        body.append(data)
        tokenizer_offset = offset  # the last item is the tokenizer
        offset += len(data)
    file_size = offset

    header = struct.pack("<2I16i4f3Q", MAGIC, VERSION, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size,
                         min(cfg.vocab_size, enc.n_vocab), cfg.vocab_size, POS_EMB[cfg.pos_emb], MLPS[cfg.mlp], hidden,
                         NORMS[cfg.norm], int(cfg.qk_norm), int(cfg.tie_embeddings), int(cfg.bias), DTYPES[dtype],
                         group_size, enc.eot_token,
                         cfg.logit_softcap, cfg.rope_theta, norm_eps, RMS_NORM_EPS,
                         tokenizer_offset, len(tokenizer), file_size)
    header += struct.pack("<4i", int(cfg.doc_mask), cfg.attn_window, int(cfg.value_embeds), int(cfg.unet_skips))
    header += b"\0" * (HEADER_SIZE - len(header))
    with atomic_write(path) as f:
        f.write(header)
        for part in body:
            f.write(part)
    return file_size
