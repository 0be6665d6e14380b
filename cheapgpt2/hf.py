"""
GPT-2's weights between transformers and our GPT, both ways: from_pretrained loads OpenAI's GPT-2 (or any
GPT2LMHeadModel directory) into GPT; hf_state_dict and vocab_and_merges write ours as one (export_hf.py,
export_gguf.py).

    from cheapgpt2.hf import from_pretrained
    model = from_pretrained("gpt2")            # or a directory saved by transformers
"""

import functools
import json
import os

import torch

from cheapgpt2.model import GPT, GPTConfig
from cheapgpt2.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE

EOT_TEXT = "<|endoftext|>"
# what GPT-2's architecture in transformers fixes: (GPTConfig field, required value, what to say when it differs)
GPT2_ARCHITECTURE = [("pos_emb", "learned", "RoPE"), ("mlp", "gelu", "a non-GELU MLP"), ("norm", "layernorm", "RMSNorm"),
                     ("qk_norm", False, "QK-norm"), ("tie_embeddings", True, "an untied head"),
                     ("logit_softcap", 0.0, "logit soft-capping"), ("bias", True, "Linear layers without biases"),
                     ("doc_mask", False, "document masking"), ("attn_window", 0, "windowed attention"),
                     ("value_embeds", False, "value embeddings"), ("unet_skips", False, "U-net skips")]


def check_gpt2_architecture(config):
    """ValueError unless the model is GPT-2's architecture, naming what is not."""
    different = [name for field, value, name in GPT2_ARCHITECTURE if getattr(config, field) != value]
    if different:
        raise ValueError(f"this checkpoint uses {', '.join(different)}: no standard Hugging Face architecture holds it "
                         f"(only GPT-2's exports); score it with lm-evaluation-harness through "
                         f"`python eval_lm.py CKPT --tasks ...` instead")
    if config.vocab_size < GPT2_VOCAB_SIZE:
        raise ValueError(f"the model has {config.vocab_size} token rows, fewer than GPT-2's tokenizer's {GPT2_VOCAB_SIZE}")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table for its vocab.json and merges.txt (Radford et al.'s
    encoder.py): printable Latin-1 bytes stand for themselves, the other 68 bytes for characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.lru_cache(maxsize=1)  # a few seconds of pure Python; the same for every export
def vocab_and_merges(enc):
    """vocab.json's {token text: id} and merges.txt's pairs, from tiktoken's byte-level BPE ranks. The pair that
    makes a token: byte-pair merging its own bytes with the lower ranks only, until two pieces are left."""
    ranks = enc._mergeable_ranks  # {token bytes: rank}; the rank is the token id
    table = bytes_to_unicode()
    text = lambda b: "".join(table[x] for x in b)  # noqa: E731
    vocab = {text(token): rank for token, rank in ranks.items()}
    vocab[EOT_TEXT] = EOT_TOKEN
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
            best_rank, i = min(pairs)
            if best_rank >= rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {rank} has no merge pair; tiktoken's ranks are not GPT-2's byte-level BPE")
        merges.append(f"{text(parts[0])} {text(parts[1])}")
    return vocab, merges


def hf_state_dict(model):
    """Our weights under transformers' GPT-2 names: its Conv1D layers store (in, out), the transpose of nn.Linear."""
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    state = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied: transformers rebuilds it from transformer.wte.weight
        tensor = tensor.detach().float()
        if key.endswith(conv1d):
            tensor = tensor.t()
        if key == "transformer.wte.weight":
            tensor = tensor[:GPT2_VOCAB_SIZE]
        state[key] = tensor.contiguous()
    return state


def from_pretrained(name_or_dir):
    """A GPT holding GPT-2's weights from a Hugging Face model id ("gpt2", "gpt2-medium", ...; needs the network)
    or from a local directory that transformers saved (config.json + safetensors or .bin)."""
    model_dir = name_or_dir
    if not os.path.isdir(name_or_dir):
        from huggingface_hub import snapshot_download  # installed with `datasets`
        try:
            model_dir = snapshot_download(name_or_dir, allow_patterns=["config.json", "*.safetensors"])
        except Exception as e:
            raise ValueError(f"could not load {name_or_dir!r}: not a local directory, and downloading it "
                             f"from Hugging Face failed ({type(e).__name__}); pass a directory saved by transformers") from None
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path} does not exist; pass a directory that transformers saved")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_path} is not valid JSON ({type(e).__name__}); save the model again with transformers") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{config_path} is not a transformers config (a JSON object)")
    if hf.get("model_type") != "gpt2":
        raise ValueError(f"{model_dir} holds a {hf.get('model_type')!r} model; only GPT-2's architecture loads here")
    if hf.get("activation_function", "gelu_new") != "gelu_new" or hf.get("layer_norm_epsilon", 1e-5) != 1e-5:
        raise ValueError(f"{model_dir}: only GPT-2's tanh GELU (gelu_new) and layer_norm_epsilon=1e-5 are supported")
    missing = [key for key in ("n_positions", "vocab_size", "n_layer", "n_head", "n_embd") if not isinstance(hf.get(key), int)]
    if missing:
        raise ValueError(f"{config_path} has no integer {', '.join(missing)}; is it GPT-2's config.json?")
    config = GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                       n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True)
    model = GPT(config)
    hf_state = load_hf_state_dict(model_dir)
    # transformers' Conv1D stores weights as (in, out); nn.Linear wants (out, in)
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    ours = model.state_dict()
    for key in ours:
        if key == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        if key not in hf_state:
            raise ValueError(f"{model_dir}: weight {key} is missing from the checkpoint")
        w = hf_state[key].t() if key.endswith(conv1d) else hf_state[key]
        if w.shape != ours[key].shape:
            raise ValueError(f"{model_dir}: weight {key} has shape {tuple(w.shape)}, expected {tuple(ours[key].shape)}")
        with torch.no_grad():
            ours[key].copy_(w)
    return model





def load_hf_state_dict(model_dir):
    """A transformers GPT-2 state dict with every key under 'transformer.' (hub files of GPT2Model have no prefix)."""
    safetensors_path = os.path.join(model_dir, "model.safetensors")
    bin_path = os.path.join(model_dir, "pytorch_model.bin")
    if not os.path.exists(safetensors_path) and not os.path.exists(bin_path):
        raise FileNotFoundError(f"{model_dir} has neither model.safetensors nor pytorch_model.bin")
    path = safetensors_path if os.path.exists(safetensors_path) else bin_path
    try:
        if path == safetensors_path:
            from safetensors.torch import load_file
            state = load_file(safetensors_path)
        else:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors raises its own SafetensorError; torch.load several kinds
        raise ValueError(f"{path} is not a weights file we can read ({type(e).__name__}); damaged or incomplete? "
                         f"save or download the model again") from None
    return {k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k: v for k, v in state.items()}
