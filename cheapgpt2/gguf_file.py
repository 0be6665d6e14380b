"""
A checkpoint of GPT-2's architecture as GGUF, the file llama.cpp runs (export_gguf.py is its command line;
measure/bench_serve.py writes the peer's files with it). The layout is llama.cpp's "gpt2" architecture.

Types: f32; f16 and q8_0 (llama.cpp's Q8_0, by gguf's own quantizer) for every matrix; q4_0 and bf16 hold the
numbers of the C engine's q4_0 and bf16 files (quantize.py's schemes): each block's Q4_0 matrix is quantize.py's
q4_0, its scale an fp16 number already, and the embedding (the tied head) is Q8_0 as the engine keeps it in 8 bits;
bf16 rounds every matrix to nearest. The position table stays f32 in those two, as the engine keeps it.
"""

import os

import numpy as np
import torch

from cheapgpt2.checkpoint import load_checkpoint
from cheapgpt2.common import atomic_path
from cheapgpt2.hf import check_gpt2_architecture, vocab_and_merges
from cheapgpt2.quantize import q4_0_pack, q4_0_quantize
from cheapgpt2.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, get_encoding

LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, GPT-2's
DTYPES = ("f32", "f16", "q8_0", "q4_0", "bf16")


def q4_0_blocks(matrix):
    """A float32 matrix (out, in) as GGUF Q4_0 blocks, quantize.py's q4_0 numbers: per 32 inputs, the scale as fp16
    (2 bytes) then the 16 bytes of values. (out, in / 32 * 18) uint8."""
    q, scale = q4_0_quantize(torch.from_numpy(matrix))
    rows = matrix.shape[0]
    scales = scale.half().numpy().view(np.uint8).reshape(rows, -1, 2)
    return np.concatenate([scales, q4_0_pack(q).numpy().reshape(rows, -1, 16)], axis=2).reshape(rows, -1)


def gguf_tensors(model):
    """{GGUF name: float32 array}, in llama.cpp's gpt2 layout."""
    sd = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    tensors = {"token_embd.weight": sd["transformer.wte.weight"][:GPT2_VOCAB_SIZE],
               "position_embd.weight": sd["transformer.wpe.weight"]}
    names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
             "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i in range(model.config.n_layer):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                tensors[f"blk.{i}.{theirs}.{kind}"] = sd[f"transformer.h.{i}.{ours}.{kind}"]
    tensors["output_norm.weight"] = sd["transformer.ln_f.weight"]
    tensors["output_norm.bias"] = sd["transformer.ln_f.bias"]
    tensors["output.weight"] = sd["lm_head.weight"][:GPT2_VOCAB_SIZE]  # tied: the embedding again, as llama.cpp reads it
    return tensors


def export(checkpoint_path, out_path, dtype="f32"):
    """Write the GGUF file atomically (temp file + rename); returns the model's config."""
    try:
        import gguf
    except ImportError:
        raise ValueError("export_gguf.py needs the gguf package: pip install gguf") from None
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    model, _ = load_checkpoint(checkpoint_path)
    cfg = model.config
    check_gpt2_architecture(cfg)
    vocab, merges = vocab_and_merges(get_encoding())
    tokens = sorted(vocab, key=vocab.get)  # by id: 50,257 byte-level strings, <|endoftext|> last

    with atomic_path(out_path) as tmp_path:  # the GGUF writer opens its file itself
        writer = gguf.GGUFWriter(tmp_path, "gpt2")
        writer.add_name(os.path.basename(os.path.dirname(os.path.abspath(checkpoint_path))) or "gpt2")
        writer.add_context_length(cfg.block_size)
        writer.add_embedding_length(cfg.n_embd)
        writer.add_feed_forward_length(4 * cfg.n_embd)
        writer.add_block_count(cfg.n_layer)
        writer.add_head_count(cfg.n_head)
        writer.add_layer_norm_eps(LAYER_NORM_EPS)
        file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                      "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
                      "bf16": gguf.LlamaFileType.MOSTLY_BF16}
        writer.add_file_type(file_types[dtype])
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tokens)
        writer.add_token_types([gguf.TokenType.CONTROL if t == EOT_TOKEN else gguf.TokenType.NORMAL
                                for t in range(len(tokens))])
        writer.add_token_merges(merges)
        writer.add_bos_token_id(EOT_TOKEN)
        writer.add_eos_token_id(EOT_TOKEN)
        for name, data in gguf_tensors(model).items():
            block_matrix = data.ndim == 2 and name.startswith("blk.")
            if data.ndim == 2 and dtype == "f16":
                writer.add_tensor(name, data.astype(np.float16))
            elif dtype == "bf16" and data.ndim == 2 and name != "position_embd.weight":
                bf16 = torch.from_numpy(data).to(torch.bfloat16).view(torch.uint16).numpy()
                writer.add_tensor(name, bf16, raw_dtype=gguf.GGMLQuantizationType.BF16)
            elif dtype == "q4_0" and block_matrix:
                writer.add_tensor(name, q4_0_blocks(data), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
            elif (data.ndim == 2 and data.shape[1] % 32 == 0 and
                  (dtype == "q8_0" or (dtype == "q4_0" and name != "position_embd.weight"))):
                quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:  # norms, biases, the position table of q4_0 and bf16, a matrix of no whole number of blocks
                writer.add_tensor(name, data)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return cfg
