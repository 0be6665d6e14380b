"""
Sample text from a checkpoint (or from OpenAI's GPT-2), streamed to stdout as the tokens arrive.

    python sample.py out/demo_cpu/ckpt.pt --prompt "The for statement"
    python sample.py out/modern/ckpt.pt --prompt_file prompt.txt --num_samples 3 --temperature 0.8 --top_p 0.95
    python sample.py --hf gpt2 --prompt "Hello, I'm a language model," --max_new_tokens 100 --seed 2
    python sample.py out/quant_cpu/ckpt.pt --prompt "ROMEO:" --quant q8_0     # int8 weights (quantize.py), on the CPU

Generation runs a prefill over the prompt and then one token per step against the KV cache (cheapgpt2/generate.py);
prefill and decode speeds go to stderr at the end. The prompt starts after <|endoftext|>, as every document
did in training (prepare_data.py). A character whose UTF-8 bytes span several tokens is printed once complete.
"""

import argparse
import codecs
import sys
import time

import torch

from cheapgpt2.checkpoint import add_model_arguments, load_model, model_arguments_error
from cheapgpt2.common import pick_device
from cheapgpt2.generate import generate_tokens
from cheapgpt2.quantize import SCHEMES, quantize
from cheapgpt2.tokenizer import EOT_TOKEN, get_encoding


class TextStream:
    """Token ids in, text out as soon as it is complete: GPT-2's byte-level tokens can split a character's UTF-8
    bytes, so the bytes wait in an incremental decoder until the character is whole."""

    def __init__(self, enc):
        self.enc = enc
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token):
        return self.decoder.decode(self.enc.decode_single_token_bytes(token))

    def flush(self):
        """What is left at the end: an unfinished character becomes U+FFFD."""
        return self.decoder.decode(b"", final=True)


def prompt_tokens(text, block_size, enc):
    """[<|endoftext|>] + the prompt's tokens, or a ValueError saying what is wrong with the prompt."""
    if not text.strip():
        raise ValueError("the prompt is empty; pass some text with --prompt or --prompt_file")
    tokens = [EOT_TOKEN] + enc.encode_ordinary(text)
    if len(tokens) > block_size:
        raise ValueError(f"the prompt is {len(tokens)} tokens (with <|endoftext|>), longer than the model's context of "
                         f"{block_size}; shorten it")
    return tokens


def sample(model, tokens, args, enc, out=None):
    """Stream one sample of args.max_new_tokens tokens after `tokens` to out (stdout); returns (prefill s, decode s, tokens)."""
    out = out or sys.stdout
    stream = TextStream(enc)
    idx = torch.tensor([tokens], device=next(model.parameters()).device)
    t0 = time.perf_counter()
    t_first, n = None, 0
    for token in generate_tokens(model, idx, args.max_new_tokens, args.temperature, args.top_k, args.top_p):
        n += 1
        if t_first is None:
            t_first = time.perf_counter()  # the prefill, and the first token sampled from it
        out.write(stream.push(token.item()))
        out.flush()
    out.write(stream.flush() + "\n")
    t_end = time.perf_counter()
    return (t_first or t_end) - t0, t_end - (t_first or t_end), n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, "sample")
    parser.add_argument("--prompt", default="", help="the text to continue")
    parser.add_argument("--prompt_file", metavar="F", help="read the prompt from this UTF-8 file instead")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="tokens to generate per sample (default 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0: always the most likely token (default 0.8)")
    parser.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens only (default: all)")
    parser.add_argument("--top_p", type=float, default=None, help="sample among the most likely tokens that make up this probability (nucleus; default: all)")
    parser.add_argument("--num_samples", type=int, default=1, help="independent samples, one after the other (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: the same seed, weights and options give the same text (default 1)")
    parser.add_argument("--device", default="auto", help="cuda, cpu, mps, ...; auto (default): cuda when available, else cpu")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="weights and activations; auto (default): bfloat16 on CUDA, float32 elsewhere")
    parser.add_argument("--quant", default="none", metavar="SCHEME", help=f"quantize the weights first (quantize.py, CPU kernels): {', '.join(SCHEMES)} (default none)")
    args = parser.parse_args(argv)

    if error := model_arguments_error(args):
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        if args.max_new_tokens < 1 or args.num_samples < 1:
            raise ValueError("--max_new_tokens and --num_samples must be positive")
        if args.temperature < 0 or (args.top_k is not None and args.top_k < 1) or (args.top_p is not None and not 0 < args.top_p <= 1):
            raise ValueError("--temperature must be >= 0, --top_k >= 1 and --top_p in (0, 1]")
        text = args.prompt
        if args.prompt_file:
            try:
                with open(args.prompt_file, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"cannot read --prompt_file {args.prompt_file} ({type(e).__name__}); pass a UTF-8 text file") from None
        enc = get_encoding()
        device = pick_device(args.device)
        if args.quant != "none" and (device != "cpu" or args.dtype == "bfloat16"):
            raise ValueError(f"--quant {args.quant} runs on the CPU in float32: pass --device cpu (and no --dtype bfloat16)")
        model = load_model(args.checkpoint, args.hf, device)
        tokens = prompt_tokens(text, model.config.block_size, enc)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(args.dtype)
        model.to(dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32))
        model = quantize(model, args.quant)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    torch.manual_seed(args.seed)
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} of {args.num_samples}")
        sys.stdout.write(text)
        prefill_s, decode_s, n = sample(model, tokens, args, enc)
        # the first token is sampled right after the prefill, so it counts with the prefill's time
        print(f"prefill: {len(tokens)} tokens in {prefill_s:.2f}s ({len(tokens) / max(prefill_s, 1e-9):.1f} tokens/s) | "
              f"decode: {n - 1} tokens in {decode_s:.2f}s ({(n - 1) / max(decode_s, 1e-9):.1f} tokens/s) | "
              f"{device}, {next(model.parameters()).dtype}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
