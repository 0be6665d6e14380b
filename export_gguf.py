"""
Export a checkpoint of GPT-2's architecture to GGUF, the file llama.cpp, ollama and LM Studio run.

    pip install gguf                                         # once: the GGUF writer, from the llama.cpp project
    python export_gguf.py out/baseline/ckpt.pt out/baseline/model.gguf
    python export_gguf.py out/baseline/ckpt.pt out/baseline/model-q8_0.gguf --dtype q8_0
    python export_gguf.py out/baseline/ckpt.pt out/baseline/model-q4_0.gguf --dtype q4_0
    llama-cli -m out/baseline/model.gguf -p "The for statement" -n 64

Why the `gguf` package and not llama.cpp's own convert_hf_to_gguf.py on export_hf.py's output: that script
needs llama.cpp's source tree, transformers and the model as a Hugging Face directory first, where this is
one step with one small pure-Python dependency, written by the same project, that also quantizes.

The file is llama.cpp's "gpt2" architecture: tensors token_embd, position_embd, blk.N.{attn_norm, attn_qkv,
attn_output, ffn_norm, ffn_up, ffn_down} (weights as nn.Linear stores them, out x in, and biases),
output_norm and output; the vocabulary cut to GPT-2's 50,257 tokens (the padded rows are never used);
GPT-2's byte-level BPE (export_hf.py's vocabulary and merges) as tokenizer.ggml.model "gpt2".
--dtype f32 (default), f16, q8_0 (llama.cpp's Q8_0 for the matrices; norms and biases stay f32), or q4_0 and bf16:
the numbers of export.py's q4_0 and bf16 files for the C engine (cheapgpt2/gguf_file.py says which tensors).
"""

import argparse
import sys

from cheapgpt2.gguf_file import export

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a ckpt.pt written by train.py, of GPT-2's architecture (baseline, increase_max_lr)")
    parser.add_argument("out", help="the .gguf file to write")
    parser.add_argument("--dtype", default="f32", help="f32 (default), f16, q8_0, q4_0 (the blocks' matrices; the "
                        "embedding Q8_0) or bf16 for the matrices")
    args = parser.parse_args(argv)
    try:
        cfg = export(args.checkpoint, args.out, args.dtype)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: gpt2, {cfg.n_layer} layers x {cfg.n_embd}, context {cfg.block_size}, {args.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
