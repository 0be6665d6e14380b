"""
GPT-2-tokenized FineWeb shards, downloaded ready-made instead of tokenized on a rented GPU's clock.

    python download_tokens.py                                   # FineWeb-Edu: 32 train shards (3.2B tokens) + val
    python download_tokens.py fineweb10B --train_shards 8       # FineWeb (the speedrun's 3.28 target is on it)
    make data_fineweb_cached                                    # the first line, into data/fineweb_edu
    python download_tokens.py tokenizer                         # GPT-2's BPE ranks alone, for offline use (make setup)

The shards are the ones the NanoGPT speedrun downloads (KellerJordan/modded-nanogpt's data/cached_fineweb10B.py
and cached_finewebedu10B.py): Hugging Face datasets kjj0/fineweb10B-gpt2 (103 train shards) and
kjj0/finewebedu10B-gpt2 (99), 100M tokens each, in llm.c's format, which is ours (data.py: the 256-int32 header
with magic 20240520, then uint16 tokens). Each file is checked (header, size) once downloaded. A download cut
short resumes where it stopped, with an HTTP Range request for the rest of FILE.partial, a few times within the
run and again when the command is run again (huggingface_hub's own downloader starts every run from byte 0), and
a finished shard is not fetched twice. manifest.json is written last, as prepare_data.py's is. The file URLs are
huggingface_hub's (hf_hub_url), so HF_ENDPOINT points them at another hub (the tests' stand-in on 127.0.0.1).

Note: these are tokenized by the speedrun's own script, not by our prepare_data.py (same tokenizer, GPT-2's BPE,
and <|endoftext|> before every document, but the documents' order and the val split are theirs), and FineWeb and
FineWeb-Edu are different data: a loss on one is not a loss on the other.
"""

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request

import numpy as np
from tqdm import tqdm

from cheapgpt2.common import write_atomically
from cheapgpt2.data import HEADER_INTS, SHARD_MAGIC, SHARD_VERSION, foreign_shards
from cheapgpt2.tokenizer import ensure_tokenizer

# name: (Hugging Face dataset, file prefix, train shards it holds, our data_dir)
DATASETS = {"finewebedu10B": ("kjj0/finewebedu10B-gpt2", "finewebedu", 99, "data/fineweb_edu"),
            "fineweb10B": ("kjj0/fineweb10B-gpt2", "fineweb", 103, "data/fineweb")}


def shard_tokens(path):
    """The token count of a complete shard, from its header; ValueError naming what is wrong."""
    size = os.path.getsize(path)
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS) if size >= 4 * HEADER_INTS else None
    if header is None or header[0] != SHARD_MAGIC or header[1] != SHARD_VERSION:
        raise ValueError(f"{path} is not a token shard (no {SHARD_MAGIC} version {SHARD_VERSION} header)")
    if size != 4 * HEADER_INTS + 2 * int(header[2]):
        raise ValueError(f"{path} holds {size:,} bytes, its header promises {4 * HEADER_INTS + 2 * int(header[2]):,}")
    return int(header[2])


RETRIES = 5  # attempts after a broken connection, within one run, each from where the last one stopped
TIMEOUT_SECONDS = 60  # a stalled connection: no byte for this long


def fetch(url, path):
    """url into path through path + ".partial", resuming it with a Range request; ValueError after RETRIES."""
    partial = path + ".partial"
    for attempt in range(RETRIES + 1):
        have = os.path.getsize(partial) if os.path.exists(partial) else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                if have and response.status != 206:  # the server sent the whole file: start over
                    have = 0
                total = have + int(response.headers.get("Content-Length", 0))
                with open(partial, "ab" if have else "wb") as f, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=os.path.basename(path)) as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
            if os.path.getsize(partial) == total:
                os.replace(partial, path)
                return
            reason = f"the connection closed after {os.path.getsize(partial):,} of {total:,} bytes"
        except urllib.error.HTTPError as e:
            raise ValueError(f"{url} answered {e.code} {e.reason}") from None
        except (OSError, http.client.HTTPException) as e:  # a broken or stalled connection, a refused one
            reason = f"{type(e).__name__}: {e}"
        if attempt < RETRIES:
            time.sleep(1)
    raise ValueError(f"could not download {os.path.basename(path)} ({reason}); run the same command again to resume")


def download(name, train_shards, out_dir):
    """Fetch the val shard and the first train_shards train shards into out_dir, check them, write manifest.json."""
    from huggingface_hub import hf_hub_url
    repo_id, prefix, available, _ = DATASETS[name]
    if not 1 <= train_shards <= available:
        raise ValueError(f"--train_shards must be 1 to {available} ({repo_id} holds {available}), got {train_shards}")
    os.makedirs(out_dir, exist_ok=True)
    foreign = foreign_shards(out_dir, prefix)
    if foreign:
        raise ValueError(f"{out_dir} holds shards of another data set ({foreign[0]}{', ...' if len(foreign) > 1 else ''}),"
                         f" which training would read too; choose another --out_dir, or delete them")
    files = [f"{prefix}_val_000000.bin"] + [f"{prefix}_train_{i:06d}.bin" for i in range(1, train_shards + 1)]
    shards = []
    for i, file in enumerate(files):
        path = os.path.join(out_dir, file)
        try:
            tokens = shard_tokens(path) if os.path.exists(path) else None
        except ValueError:
            tokens = None  # damaged: fetched again
        if tokens is None:
            print(f"[{i + 1}/{len(files)}] {file}", file=sys.stderr, flush=True)
            fetch(hf_hub_url(repo_id, file, repo_type="dataset"), path)
            tokens = shard_tokens(path)
        shards.append({"file": file, "split": "val" if "_val_" in file else "train", "tokens": tokens})
    manifest = {"settings": {"source": {"huggingface_dataset": repo_id, "train_shards": train_shards},
                             "tokenizer": {"library": "tiktoken", "encoding": "r50k_base", "eot": 50256,
                                           "eot_before_each_document": True}},
                "command": "python download_tokens.py " + " ".join(sys.argv[1:]),
                "shards": shards, "complete": True,
                "tokens": {split: sum(s["tokens"] for s in shards if s["split"] == split) for split in ("val", "train")}}
    write_atomically(os.path.join(out_dir, "manifest.json"), json.dumps(manifest, indent=1).encode())
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", default="finewebedu10B", choices=[*sorted(DATASETS), "tokenizer"],
                        help="finewebedu10B (default; the configs' data_dir) or fineweb10B; tokenizer: only make GPT-2's "
                             "BPE tokenizer available offline (TIKTOKEN_CACHE_DIR, default .cache/tiktoken)")
    parser.add_argument("--train_shards", type=int, default=32, help="100M-token train shards (default 32: 3.2B)")
    parser.add_argument("--out_dir", default=None, help="default data/fineweb_edu, or data/fineweb for fineweb10B")
    args = parser.parse_args(argv)
    try:
        if args.dataset == "tokenizer":
            print(ensure_tokenizer())
            return 0
        out_dir = args.out_dir or DATASETS[args.dataset][3]
        manifest = download(args.dataset, args.train_shards, out_dir)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{out_dir}: {len(manifest['shards'])} shards, {manifest['tokens']['val']:,} val + "
          f"{manifest['tokens']['train']:,} train tokens from {DATASETS[args.dataset][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
