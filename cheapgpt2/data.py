"""
Token shards on disk, and the loader that feeds them to training.

A shard is the .bin format of karpathy/llm.c (dev/data/data_common.py, write_datafile) that
KellerJordan/modded-nanogpt also reads (_load_data_shard), so their published FineWeb shards load
here and ours load there:

    header: 256 little-endian int32 = [20240520 (magic), 1 (version), number of tokens, 0, ...]
    body:   the tokens, little-endian uint16 (GPT-2's vocabulary of 50257 fits)

prepare_data.py writes shards named {prefix}_val_000000.bin, {prefix}_train_000001.bin, ...;
ShardLoader reads one split of them through numpy.memmap, so a shard is never loaded whole:

    loader = ShardLoader("data/shakespeare", "train", batch_size=8, block_size=256)
    x, y = loader.next_batch()        # (B, T) int64 each; y is x shifted left by one token
    state = loader.state_dict()       # save beside the checkpoint; load_state_dict(state) resumes
"""

import glob
import json
import os
import re

import numpy as np
import torch

from cheapgpt2.common import write_atomically

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")  # uint16, little-endian


def foreign_shards(out_dir, prefix):
    """The .bin files of out_dir that are not shards of `prefix` ({prefix}_val_000000.bin, {prefix}_train_000001.bin,
    ...): the loader reads every shard of a folder, so a writer refuses a folder that holds another data set's."""
    ours = re.compile(re.escape(prefix) + r"_(val|train)_\d{6}\.bin")
    return [name for name in sorted(os.listdir(out_dir)) if name.endswith(".bin") and not ours.fullmatch(name)]


def write_shard(path, tokens):
    """Write tokens to path as a shard; a crash or a full disk leaves no half-written file at path."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"{path}: tokens must be a 1-D sequence, got shape {tokens.shape}")
    if len(tokens) >= 2**31:
        raise ValueError(f"{path}: {len(tokens):,} tokens do not fit the int32 header; write smaller shards")
    if tokens.dtype != TOKEN_DTYPE and len(tokens) and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ValueError(f"{path}: token ids must be in [0, 65535] to be stored as uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = [SHARD_MAGIC, SHARD_VERSION, len(tokens)]
    write_atomically(path, header.tobytes(), np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE).data)


def read_header(path):
    """Validate the shard at path and return its number of tokens; ValueError naming the file if broken."""
    size = os.path.getsize(path)  # FileNotFoundError names the file
    fix = "delete it and rerun prepare_data.py"
    if size < HEADER_BYTES:
        raise ValueError(f"{path} is not a token shard: {size} bytes is shorter than the {HEADER_BYTES}-byte header; {fix}")
    magic, version, num_tokens = np.fromfile(path, dtype="<i4", count=3).tolist()
    if magic != SHARD_MAGIC:
        raise ValueError(f"{path} is not a token shard: magic number {magic} is not {SHARD_MAGIC}; {fix}")
    if version != SHARD_VERSION:
        raise ValueError(f"{path} has shard version {version}, expected {SHARD_VERSION} (GPT-2 tokens as uint16); {fix}")
    expected = HEADER_BYTES + num_tokens * TOKEN_DTYPE.itemsize
    if num_tokens < 0 or size != expected:
        raise ValueError(f"{path} is truncated or corrupt: its header promises {num_tokens:,} tokens "
                         f"({expected:,} bytes) but the file has {size:,} bytes; {fix}")
    return num_tokens


def read_shard(path):
    """The tokens of the shard at path, as a read-only uint16 numpy.memmap (validated by read_header)."""
    num_tokens = read_header(path)
    if num_tokens == 0:  # numpy cannot memory-map zero bytes
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(num_tokens,))


class ShardLoader:
    """
    Batches (x, y) of shape (B, T) from the shards data_dir/*_{split}_*.bin, read in sorted order.

    Each step takes tokens_per_step = B * T * world_size consecutive tokens; rank r gets the B*T
    starting at r*B*T (plus one more token for the targets), so the ranks' batches are disjoint and
    together cover the step. When what is left of a shard cannot fill a whole step (+1 token for the
    target), the loader moves to the next shard, and after the last shard back to the first (a new
    epoch); the tokens left over at a shard's end are skipped, and so is a shard smaller than one
    step. A fresh or reset() loader always yields the same batches, so evaluating on the val split
    after reset() sees the same tokens. Given vocab_size, each shard is checked once, when first opened,
    for token ids the model has no embedding for (a shard of another tokenizer).
    """

    def __init__(self, data_dir, split, batch_size, block_size, rank=0, world_size=1, vocab_size=None):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.files = sorted(glob.glob(os.path.join(glob.escape(data_dir), f"*_{split}_*.bin")))
        if not self.files:
            raise FileNotFoundError(f"no *_{split}_*.bin shards in {data_dir}; run prepare_data.py first")
        self.batch_size, self.block_size, self.rank = batch_size, block_size, rank
        self.vocab_size, self.checked_shards = vocab_size, set()
        self.tokens_per_step = batch_size * block_size * world_size
        self.shard_tokens = [read_header(f) for f in self.files]  # validates every header up front
        # a step at position p reads tokens [p, p + tokens_per_step + 1) of the shard
        self.steps_per_epoch = sum(max(0, (n - 1) // self.tokens_per_step) for n in self.shard_tokens)
        self.tokens_per_epoch = self.steps_per_epoch * self.tokens_per_step
        if self.steps_per_epoch == 0:
            largest = max(range(len(self.files)), key=lambda i: self.shard_tokens[i])
            raise ValueError(
                f"{self.files[largest]} holds {self.shard_tokens[largest]:,} tokens, fewer than one step needs "
                f"(batch_size*block_size*world_size+1 = {batch_size}*{block_size}*{world_size}+1 = "
                f"{self.tokens_per_step + 1:,}); use a smaller batch or bigger shards "
                f"(prepare_data.py --shard_tokens/--val_tokens)")
        self.reset()

    def reset(self):
        """Back to the first batch of the first shard."""
        self.load_state_dict({"shard": 0, "position": 0, "epoch": 0})

    def state_dict(self):
        """The exact position, as plain ints: the same for every rank."""
        return {"shard": self.shard, "position": self.position, "epoch": self.epoch}

    def load_state_dict(self, state):
        if not 0 <= state["shard"] < len(self.files):
            raise ValueError(f"loader state points at shard {state['shard']}, but there are {len(self.files)} "
                             f"shards ({self.files[0]}, ...); resume with the data the run started with")
        self.shard, self.position, self.epoch = state["shard"], state["position"], state["epoch"]
        self.tokens = self.open_shard(self.shard)

    def open_shard(self, index):
        """The tokens of shard index; the first time, checked against vocab_size (one pass: ~0.1 s per 100M tokens)."""
        tokens = read_shard(self.files[index])
        if self.vocab_size is not None and index not in self.checked_shards:
            largest = int(tokens.max()) if len(tokens) else 0
            if largest >= self.vocab_size:
                raise ValueError(f"{self.files[index]} holds token id {largest}, but the model's vocabulary has "
                                 f"{self.vocab_size} entries: it was written with another tokenizer; prepare the "
                                 f"data again with prepare_data.py (GPT-2's BPE)")
            self.checked_shards.add(index)
        return tokens

    def next_batch(self):
        """(x, y): CPU int64 tensors of shape (B, T), y[b, t] being the token after x[b, t]."""
        B, T = self.batch_size, self.block_size
        while self.position + self.tokens_per_step + 1 > len(self.tokens):
            self.shard += 1
            if self.shard == len(self.files):
                self.shard, self.epoch = 0, self.epoch + 1
            self.position = 0
            self.tokens = self.open_shard(self.shard)
        start = self.position + self.rank * B * T
        buf = torch.from_numpy(self.tokens[start : start + B * T + 1].astype(np.int64))
        self.position += self.tokens_per_step
        return buf[:-1].view(B, T), buf[1:].view(B, T)


# -----------------------------------------------------------------------------
# JSON lines: local text and benchmark inputs, and train.py's log.jsonl


def read_jsonl(path):
    """(line number, value) for each non-blank line of a JSON-lines file; a bad line is a ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {line_number} is not JSON ({e.msg})") from None
