"""
Tokenize text with GPT-2's BPE into the token shards that data.py's ShardLoader reads.

    python prepare_data.py --input ../shared/data/tinyshakespeare.txt --out_dir data/shakespeare
    python prepare_data.py --out_dir data/fineweb_edu --max_tokens 3200000000   # FineWeb-Edu sample-10BT, streamed
    python prepare_data.py --input ../shared/data/tinyshakespeare.txt --bench    # tokens/s vs tiktoken, writes nothing

Sources: a Hugging Face dataset streamed through `datasets` (by default FineWeb-Edu's sample-10BT;
nothing beyond what --max_tokens needs is read), or local files given to --input: .txt (one
document per file), .jsonl and .parquet (one document per row, from the field --text_field).
Every document is preceded by <|endoftext|> (50256), in the order of the inputs.

Output, in --out_dir: {prefix}_val_000000.bin, {prefix}_train_000001.bin, ... of --shard_tokens
tokens each (the first --val_tokens tokens are val), in the format of llm.c and modded-nanogpt
(see data.py), and manifest.json: the source, the tokenizer, each shard's token and document
counts, and the command line. The output depends only on the source and these settings, never
on --workers. Each shard is written under a temporary name and renamed when complete; the
manifest records after each shard where the stream stands, so rerunning the same command after a
crash, Ctrl-C or SIGTERM skips the finished shards and produces the same bytes. A Hugging Face
stream resumes from the `datasets` state saved with the last finished shard (nothing before it is
downloaded again); local files are read again from the start, but their finished documents are not
tokenized again. A dropped connection while streaming is retried with exponential backoff.

Each split must end up with at least one training batch (--min_batch_tokens): input too small for
that is refused with one line instead of leaving train.py to refuse it later.
"""

import argparse
import collections
import contextlib
import glob
import itertools
import json
import multiprocessing
import os
import re
import shlex
import signal
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from cheapgpt2.common import write_atomically
from cheapgpt2.data import TOKEN_DTYPE, foreign_shards, read_header, read_jsonl, write_shard
from cheapgpt2.tokenizer import ENCODING_NAME, EOT_TOKEN, get_encoding

DEFAULT_DATASET = "HuggingFaceFW/fineweb-edu"
DEFAULT_DATASET_NAME = "sample-10BT"
DEFAULT_DATASET_VAL_TOKENS = 100_000_000  # llm.c's FineWeb val shard; local files get 10% of their tokens
TASK_CHARS = 1 << 16  # text per tokenization task: ~15 ms of work, small enough to balance the workers
BENCH_CHARS = 64_000_000  # --bench times at most this much of the source's text
# One batch of the smallest config here, configs/demo_cpu.py: batch_size*block_size+1 = 16*128+1 (the +1: the last target)
MIN_BATCH_TOKENS = 16 * 128 + 1
STREAM_RETRIES = 5  # tries after a network error while streaming, waiting 2, 4, 8, 16, 32 s: a minute, then one clear line
STREAM_RETRY_SECONDS = 2.0
TOKENIZER = {"library": "tiktoken", "encoding": ENCODING_NAME, "eot": EOT_TOKEN, "eot_before_each_document": True}
MANIFEST = "manifest.json"

# -----------------------------------------------------------------------------
# Sources: each is an iterator of documents (str), in a fixed order


def expand_inputs(patterns):
    """The files named by --input, in the order given, each glob expanded in sorted order; checked up front."""
    paths = []
    for pattern in patterns:
        is_glob = any(c in pattern for c in "*?[")
        matches = sorted(glob.glob(pattern, recursive=True)) if is_glob else [pattern]
        if not matches:
            raise FileNotFoundError(f"no file matches --input {pattern}")
        paths += matches
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input file {path} does not exist")
        if not path.endswith((".txt", ".jsonl", ".parquet")):
            raise ValueError(f"input file {path} is not .txt, .jsonl or .parquet")
        if os.path.getsize(path) == 0:
            raise ValueError(f"input file {path} is empty")
    return paths


def read_documents(paths, text_field="text"):
    """The documents of local files: a whole .txt file, or each row's text_field in .jsonl and .parquet."""
    for path in paths:
        if path.endswith(".txt"):
            try:
                with open(path, encoding="utf-8", newline="") as f:  # newline="": keep \r\n as it is
                    yield f.read()
            except UnicodeDecodeError as e:
                raise ValueError(f"input file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        elif path.endswith(".jsonl"):
            for line_number, row in read_jsonl(path):
                yield document_text(row, text_field, f"{path}:{line_number}")
        else:
            import pyarrow.parquet  # installed with `datasets`

            parquet = pyarrow.parquet.ParquetFile(path)
            if text_field not in parquet.schema_arrow.names:
                raise ValueError(f"{path} has no '{text_field}' column (it has: {', '.join(parquet.schema_arrow.names)}); "
                                 f"name the text column with --text_field")
            for batch in parquet.iter_batches(columns=[text_field]):
                for row_number, text in enumerate(batch.column(0).to_pylist()):
                    yield document_text({text_field: text}, text_field, f"{path} (a row of batch {row_number})")


def document_text(row, text_field, where):
    """row[text_field], or a ValueError that says where the row is and how to name the field."""
    if not isinstance(row, dict) or text_field not in row:
        fields = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise ValueError(f"{where} has no '{text_field}' field (it has: {fields}); name the text field with --text_field")
    if not isinstance(row[text_field], str):
        raise ValueError(f"{where}: '{text_field}' is {type(row[text_field]).__name__}, not text")
    return row[text_field]


def load_streaming_dataset(dataset, name, split):
    """The Hugging Face dataset as an iterable of rows, streamed (tests replace this function)."""
    import datasets

    return datasets.load_dataset(dataset, name=name, split=split, streaming=True)


def first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def is_transient(error):
    """A network failure worth retrying: OSError (requests' errors are OSErrors) or a timeout/connection error of another library."""
    names = ("Timeout", "Connect", "Disconnect", "Transport", "Network", "Protocol", "Payload", "HTTP", "Http")
    return isinstance(error, OSError) or any(n in cls.__name__ for cls in type(error).__mro__ for n in names)


class DatasetStream:
    """
    The documents (one per row) of a Hugging Face dataset, downloaded as they are read.

    After each row it keeps the `datasets` state_dict() that resumes right after that row
    (IterableDataset.state_dict, datasets >= 2.18), so that write_shards can save with each shard
    the state before the first row the next run needs (state_before), and resume() starts there
    instead of reading every earlier row again. A network error while iterating is retried
    STREAM_RETRIES times with exponential backoff, each time from the last row read; any other
    failure, or the last retry's, is one ValueError. Without a state (a source that has no
    state_dict, or a manifest written before there was one) rows are skipped by count.
    """

    def __init__(self, dataset, name, split="train", text_field="text"):
        self.dataset, self.name, self.split, self.text_field = dataset, name, split, text_field
        self.start, self.start_state = 0, None
        self.states = collections.deque()  # (row index, state before that row), pruned by state_before

    def resume(self, row, state=None):
        """Start at row, from state (the state before that row) if given, else by skipping row rows."""
        self.start, self.start_state = row, state

    def state_before(self, row):
        """The saved state before row (None if there is none), forgetting those before it: the next shard ends later."""
        while len(self.states) > 1 and self.states[1][0] <= row:
            self.states.popleft()
        found = self.states[0][1] if self.states and self.states[0][0] == row else None
        return None if found is None else json.loads(found)

    def open(self, row, state):
        """An iterator over the rows from row on: from the state when there is one, else read from the start and skipped."""
        rows = load_streaming_dataset(self.dataset, self.name, self.split)
        if state is not None and hasattr(rows, "load_state_dict"):
            rows.load_state_dict(state)
            return rows, iter(rows)
        return rows, itertools.islice(iter(rows), row, None)

    def __iter__(self):
        row, state, failures = self.start, self.start_state, 0
        try:
            rows, iterator = self.open(row, state)
        except Exception as e:  # offline, a wrong name: datasets raises many types
            raise ValueError(f"could not stream Hugging Face dataset {self.dataset} (--name {self.name}, --split "
                             f"{self.split}): {first_line(e)}; check the names and the connection, or give local "
                             f"files with --input") from None
        self.states.append((row, None if state is None else json.dumps(state)))
        while True:
            try:
                if iterator is None:
                    rows, iterator = self.open(row, state)
                item = next(iterator)
            except StopIteration:
                return
            except Exception as e:
                failures += 1
                if not is_transient(e) or failures > STREAM_RETRIES:
                    tried = f" after {failures - 1} retries" if failures > 1 else ""
                    raise ValueError(f"streaming {self.dataset} failed at row {row:,}{tried} ({first_line(e)}); rerun the "
                                     f"same command to continue after the finished shards") from None
                wait = STREAM_RETRY_SECONDS * 2 ** (failures - 1)
                tqdm.write(f"streaming {self.dataset} failed at row {row:,} ({first_line(e)}); "
                           f"retry {failures} of {STREAM_RETRIES} in {wait:g} s", file=sys.stderr)
                time.sleep(wait)
                iterator = None
                continue
            failures = 0
            text = document_text(item, self.text_field, f"{self.dataset} row {row:,}")
            row += 1
            state = rows.state_dict() if hasattr(rows, "state_dict") else None  # ~15 us a row, datasets 5.2
            self.states.append((row, None if state is None else json.dumps(state)))  # as text: smaller than the nested dicts
            yield text


# -----------------------------------------------------------------------------
# Tokenization: documents -> in-order chunks of tokens, over a process pool


def split_document(text, piece_chars=TASK_CHARS):
    """
    Cut a long document into pieces of about piece_chars that tokenize to exactly its tokens.

    GPT-2's pre-tokenizer regex (no look-behind) makes a newline between two non-space characters a
    token of its own, and a piece ending in that newline yields the same token (`\\s++$`), so cutting
    just after such a newline changes nothing; str.isspace() is a superset of the regex's `\\s`.
    Documents are cut only so that one long text (Tiny Shakespeare is one) spreads over the workers.
    """
    pieces, start = [], 0
    while len(text) - start > piece_chars:
        cut = text.find("\n", start + piece_chars)
        while cut != -1 and (cut + 1 == len(text) or text[cut - 1].isspace() or text[cut + 1].isspace()):
            cut = text.find("\n", cut + 1)
        if cut == -1:
            break
        pieces.append(text[start : cut + 1])
        start = cut + 1
    pieces.append(text[start:])
    return pieces


def make_tasks(documents):
    """Group documents into tasks of about TASK_CHARS characters: lists of (starts_a_document, text)."""
    task, task_chars = [], 0
    for text in documents:
        for i, piece in enumerate(split_document(text, TASK_CHARS)):
            task.append((i == 0, piece))
            task_chars += len(piece)
            if task_chars >= TASK_CHARS:
                yield task
                task, task_chars = [], 0
    if task:
        yield task


def tokenize_task(task):
    """The tokens of one task as a uint16 array, <|endoftext|> before each document (runs in a worker)."""
    encoding = get_encoding()
    parts = []
    for starts_a_document, text in task:
        if starts_a_document:
            parts.append(np.array([EOT_TOKEN], dtype=TOKEN_DTYPE))
        # encode_ordinary's tokens without a Python list; "<|endoftext|>" inside a text stays plain text
        parts.append(encoding.encode_to_numpy(text, disallowed_special=()).astype(TOKEN_DTYPE))
    return np.concatenate(parts)


def init_worker():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: one message, not one per worker
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Pool.terminate's SIGTERM ends a worker quietly, not with main's handler


def worker_pool(workers):
    """A pool of forked tokenizer processes (None for one worker); create it before tqdm or datasets start threads."""
    if workers == 1:
        return contextlib.nullcontext()
    get_encoding()  # loaded once here, inherited by every worker
    return multiprocessing.get_context("fork").Pool(workers, initializer=init_worker)


def tokenize(documents, pool, workers):
    """Chunks of tokens (uint16 arrays) of the documents, in order, whatever the number of workers."""
    tasks = make_tasks(documents)
    if pool is None:
        yield from map(tokenize_task, tasks)
        return
    pending = collections.deque()
    for task in tasks:
        pending.append(pool.apply_async(tokenize_task, (task,)))
        if len(pending) > 2 * workers:  # a bounded read-ahead: Pool.imap would read the whole stream into memory
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def skip_tokens(chunks, count):
    """The chunks without their first count tokens."""
    for chunk in chunks:
        dropped = min(count, len(chunk))
        count -= dropped
        if dropped < len(chunk):
            yield chunk[dropped:]


def take_tokens(chunks, limit):
    """The chunks up to limit tokens in all (None: no limit), reading no chunk beyond the limit."""
    chunks = iter(chunks)
    if limit is None:
        yield from chunks
        return
    while limit > 0 and (chunk := next(chunks, None)) is not None:
        yield chunk[:limit]
        limit -= len(chunk)


def with_progress(chunks, total, initial):
    """The chunks, unchanged, while a tqdm bar shows documents, tokens, tokens/s and (given a total) the ETA."""
    documents = 0
    with tqdm(total=total, initial=initial, unit="tok", unit_scale=True, disable=None, smoothing=0.1) as bar:
        for chunk in chunks:
            documents += int(np.count_nonzero(chunk == EOT_TOKEN))
            bar.set_postfix(documents=f"{documents:,}", refresh=False)
            bar.update(len(chunk))
            yield chunk


# -----------------------------------------------------------------------------
# Shards and the manifest


def shard_name(prefix, split, index):
    return f"{prefix}_{split}_{index:06d}.bin"


def check_prefix(prefix):
    """ShardLoader finds a split by the glob *_{split}_*.bin, so a prefix must not hold _train_ or _val_ itself."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", prefix) or re.search(r"_(train|val)_", prefix + "_"):
        raise ValueError(f"shard prefix {prefix!r} must be letters, digits, '_', '.' or '-', without '_train' or '_val' "
                         f"(the loader finds shards by *_train_*.bin); choose another --prefix")


def stream_position(shards):
    """Tokens written by the finished shards, and where the stream stands after them."""
    written = sum(shard["tokens"] for shard in shards)
    return written, shards[-1]["resume_at"] if shards else {"documents": 0, "tokens": 0}


def save_manifest(out_dir, manifest):
    write_atomically(os.path.join(out_dir, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())


def open_manifest(out_dir, settings):
    """
    The manifest to continue from: a fresh one, or that of an earlier run of the same settings with
    the shards that are intact on disk (from the first damaged one on, shards are written again).
    Raises ValueError if out_dir holds shards of another source or settings.
    """
    path = os.path.join(out_dir, MANIFEST)
    manifest = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                manifest = json.load(f)
            manifest["settings"], manifest["shards"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path} is not a manifest of prepare_data.py; choose another --out_dir, "
                             f"or delete {out_dir} to start over") from None
        if manifest["shards"] and manifest["settings"] != settings:
            changed = [k for k in settings if manifest["settings"].get(k) != settings[k]]
            raise ValueError(f"{out_dir} holds shards of another source or settings ({', '.join(changed)} differ from its "
                             f"{MANIFEST}); choose another --out_dir, or delete {out_dir} to start over")
    # without a manifest even shards of this prefix are not described by these settings
    foreign = (foreign_shards(out_dir, settings["prefix"]) if manifest is not None
               else [name for name in sorted(os.listdir(out_dir)) if name.endswith(".bin")])
    if foreign:
        raise ValueError(f"{out_dir} holds shards of another source ({foreign[0]}{', ...' if len(foreign) > 1 else ''}) "
                         f"not described by a {MANIFEST} of these settings; choose another --out_dir")
    if manifest is None or manifest["settings"] != settings:
        return {"settings": settings, "command": None, "val_tokens": settings["val_tokens"], "shards": [], "complete": False}
    for i, shard in enumerate(manifest["shards"]):
        try:
            intact = read_header(os.path.join(out_dir, shard["file"])) == shard["tokens"]
        except (OSError, ValueError):
            intact = False
        if not intact:
            manifest["shards"], manifest["complete"] = manifest["shards"][:i], False
            break
    return manifest


def write_shards(chunks, out_dir, manifest, state_before=None):
    """
    Cut the stream of chunks into shards after manifest's finished ones: val shards up to
    manifest["val_tokens"], then train shards, each of at most shard_tokens. The manifest is saved
    after each shard with where the stream stands ("resume_at": whole documents done, then tokens of
    the next one), which is all a rerun needs to skip the finished shards; state_before(documents),
    when given, adds the source's own state before that document ("stream_state"), so that a rerun
    does not read the earlier documents again.
    """
    prefix, shard_tokens = manifest["settings"]["prefix"], manifest["settings"]["shard_tokens"]
    val_tokens, shards = manifest["val_tokens"], manifest["shards"]
    written, resume_at = stream_position(shards)
    documents_done, tokens_into_document = resume_at["documents"], resume_at["tokens"]

    def new_buffer():
        return np.empty(min(shard_tokens, val_tokens - written) if written < val_tokens else shard_tokens, dtype=TOKEN_DTYPE)

    def finish_shard(tokens):
        nonlocal written, documents_done, tokens_into_document
        split = "val" if written < val_tokens else "train"
        name = shard_name(prefix, split, len(shards))
        try:
            write_shard(os.path.join(out_dir, name), tokens)
        except OSError as e:
            raise OSError(f"could not write {os.path.join(out_dir, name)} ({e.strerror or e}); free some disk space and "
                          f"rerun the same command: the {len(shards)} finished shards are kept") from e
        document_starts = np.flatnonzero(tokens == EOT_TOKEN)
        if len(document_starts):
            documents_done += tokens_into_document > 0  # the document this shard began inside, or none
            documents_done += len(document_starts) - 1
            tokens_into_document = len(tokens) - int(document_starts[-1])
        else:
            tokens_into_document += len(tokens)
        written += len(tokens)
        resume_at = {"documents": documents_done, "tokens": tokens_into_document}
        stream_state = state_before(documents_done) if state_before else None
        if stream_state is not None:
            resume_at["stream_state"] = stream_state
        shards.append({"file": name, "split": split, "tokens": len(tokens), "documents": len(document_starts),
                       "resume_at": resume_at})
        save_manifest(out_dir, manifest)

    buffer, filled = new_buffer(), 0
    for chunk in chunks:
        while len(chunk):
            n = min(len(chunk), len(buffer) - filled)
            buffer[filled : filled + n] = chunk[:n]
            filled, chunk = filled + n, chunk[n:]
            if filled == len(buffer):
                finish_shard(buffer)
                buffer, filled = new_buffer(), 0
    if filled:
        finish_shard(buffer[:filled])


def check_batch_fits(source, val_tokens, train_tokens, min_batch_tokens):
    """A ValueError unless val and train each hold min_batch_tokens (shards are at least that big: main checks)."""
    if min(val_tokens, train_tokens) < min_batch_tokens:
        raise ValueError(f"{describe(source)} gives {val_tokens + train_tokens:,} tokens ({val_tokens:,} val + "
                         f"{train_tokens:,} train), but train.py needs at least one batch in each split (--min_batch_tokens "
                         f"{min_batch_tokens:,}, the demo's batch_size*block_size+1); give more text, or set "
                         f"--min_batch_tokens to your config's batch_size*block_size+1")


def prepare(documents, out_dir, source, prefix, shard_tokens=100_000_000, val_tokens=None, max_tokens=None,
            workers=1, command=None, min_batch_tokens=0):
    """
    Tokenize documents (an iterable of str) into shards in out_dir and return the manifest.
    val_tokens=None gives val 10% of the tokens (all are tokenized in memory first, to count them).
    source describes the documents, for the manifest and to tell a rerun from a different job.
    A split with fewer than min_batch_tokens tokens is a ValueError (before writing, when val is 10%).
    """
    check_prefix(prefix)
    settings = {"source": source, "tokenizer": TOKENIZER, "prefix": prefix, "shard_tokens": shard_tokens,
                "val_tokens": val_tokens, "max_tokens": max_tokens}
    os.makedirs(out_dir, exist_ok=True)
    manifest = open_manifest(out_dir, settings)
    if manifest["complete"]:
        return manifest
    manifest["command"] = command
    save_manifest(out_dir, manifest)
    shards = manifest["shards"]
    written, resume_at = stream_position(shards)
    state_before = getattr(documents, "state_before", None)
    with worker_pool(workers) as pool:
        if hasattr(documents, "resume"):  # a stream: from its saved state if there is one, else by skipping rows
            documents.resume(resume_at["documents"], resume_at.get("stream_state"))
        else:
            documents = itertools.islice(documents, resume_at["documents"], None)  # read, but not tokenized again
        chunks = skip_tokens(tokenize(documents, pool, workers), resume_at["tokens"])
        chunks = take_tokens(chunks, None if max_tokens is None else max_tokens - written)
        chunks = with_progress(chunks, total=max_tokens, initial=written)
        if manifest["val_tokens"] is None:
            chunks = list(chunks)
            total = sum(map(len, chunks))
            manifest["val_tokens"] = total // 10
            if total:  # none at all: the clearer error below
                check_batch_fits(source, total // 10, total - total // 10, min_batch_tokens)
        write_shards(chunks, out_dir, manifest, state_before)
    total = sum(shard["tokens"] for shard in shards)
    if total == 0:
        raise ValueError(f"found no documents in {describe(source)}")
    if shards[-1]["split"] != "train":
        raise ValueError(f"all {total:,} tokens went to val (--val_tokens {manifest['val_tokens']:,}); "
                         f"lower --val_tokens, and delete {out_dir} to start over")
    tokens = {split: sum(s["tokens"] for s in shards if s["split"] == split) for split in ("val", "train")}
    check_batch_fits(source, tokens["val"], tokens["train"], min_batch_tokens)
    manifest["complete"] = True
    manifest["tokens"] = tokens
    manifest["documents"] = sum(shard["documents"] for shard in shards)
    save_manifest(out_dir, manifest)
    return manifest


def describe(source):
    if "dataset" in source:
        return f"{source['dataset']} ({source['name']}, split {source['split']})"
    paths = [f["path"] for f in source["files"]]
    return ", ".join(paths) if len(paths) <= 3 else f"{paths[0]}, ... ({len(paths)} files)"


# -----------------------------------------------------------------------------
# Benchmark


def benchmark(documents, workers, repeats=10):
    """Tokens/s of tokenize() and of tiktoken's own encode_ordinary_batch (threads) on the same texts; best of repeats."""
    with worker_pool(workers) as pool:  # first, as in prepare(); started before the timing, as in a long run
        selected, chars = [], 0
        for text in documents:  # a stream is read only as far as BENCH_CHARS
            selected.append(text)
            chars += len(text)
            if chars >= BENCH_CHARS:
                break
        texts = [text for task in make_tasks(selected) for _, text in task]  # tiktoken gets our pieces: its threads balance too
        encoding = get_encoding()

        def seconds(run):
            start = time.perf_counter()
            run()
            return time.perf_counter() - start

        text_tokens = sum(map(len, encoding.encode_ordinary_batch(texts, num_threads=workers)))
        collections.deque(tokenize(selected, pool, workers), maxlen=0)  # warm up the workers
        tiktoken_seconds, ours_seconds = float("inf"), float("inf")
        for _ in range(repeats):  # alternating, so that a busy moment of the machine hits both alike
            tiktoken_seconds = min(tiktoken_seconds, seconds(lambda: encoding.encode_ordinary_batch(texts, num_threads=workers)))
            ours_seconds = min(ours_seconds, seconds(lambda: collections.deque(tokenize(selected, pool, workers), maxlen=0)))
    return {"documents": len(selected), "characters": chars, "tokens": text_tokens, "workers": workers, "repeats": repeats,
            "tiktoken_tokens_per_s": text_tokens / tiktoken_seconds, "tokens_per_s": text_tokens / ours_seconds}


# -----------------------------------------------------------------------------
# Command line


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, unwinding the main process like Ctrl-C so that every finished shard stays."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


RERUN_HINT = "rerun the same command to continue after the finished shards"


HANDLING_PROCESS = [None]  # the pid whose handlers these are: a forked worker inherits them until init_worker runs


def in_a_forked_worker(signum):
    """In a worker forked before its initializer ran (Pool replaces a worker at any time): end as the signal would."""
    if os.getpid() == HANDLING_PROCESS[0]:
        return False
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return True


def exit_at_once(signum, frame):
    """A second Ctrl-C or SIGTERM while the first one unwinds (a pool, a stream closing): stop now, say so, no traceback."""
    if in_a_forked_worker(signum):
        return
    os.write(2, f"\n{signal.Signals(signum).name} again: stopped at once; {RERUN_HINT}\n".encode())
    os._exit(128 + signum)


def interrupt(signum, frame):
    if in_a_forked_worker(signum):
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, exit_at_once)  # kept until the process ends, interpreter shutdown included
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupted_cleanly():
    """Ctrl-C and SIGTERM (a spot instance's notice, `kill`, `timeout`) raise Interrupted in the main process, once."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    HANDLING_PROCESS[0] = os.getpid()
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is interrupt:  # no signal came: leave the caller's handlers as they were
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def default_prefix(args, paths):
    """fineweb_edu for HuggingFaceFW/fineweb-edu; the input's name for one file, its folder's for several."""
    if paths is None:
        name = args.dataset.split("/")[-1]
    elif len(paths) == 1:
        name = os.path.splitext(os.path.basename(paths[0]))[0]
    else:
        name = os.path.basename(os.path.dirname(os.path.abspath(paths[0])))
    name = re.sub(r"[^a-z0-9]+", "_", name.lower())
    return re.sub(r"(^|_)(train|val)(?=_|$)", "", name).strip("_") or "data"  # corpus_train.jsonl -> corpus


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--input", nargs="+", metavar="PATH",
                        help="local .txt (one document per file), .jsonl or .parquet files, globs allowed; "
                             "without it, --dataset is streamed")
    parser.add_argument("--dataset", default=None, help=f"Hugging Face dataset to stream (default: {DEFAULT_DATASET})")
    parser.add_argument("--name", default=None, help=f"the dataset's configuration (default: {DEFAULT_DATASET_NAME})")
    parser.add_argument("--split", default="train", help="the dataset's split to read (default: %(default)s)")
    parser.add_argument("--text_field", default="text",
                        help="the field holding the text in .jsonl, .parquet and dataset rows (default: %(default)s)")
    parser.add_argument("--out_dir", default=None, help="where to write the shards and manifest.json (default: data/PREFIX)")
    parser.add_argument("--prefix", default=None,
                        help="shard file names start with it (default: fineweb_edu for FineWeb-Edu, else the input file's name)")
    parser.add_argument("--shard_tokens", type=int, default=100_000_000, help="tokens per shard (default: %(default)s)")
    parser.add_argument("--val_tokens", type=int, default=None,
                        help=f"tokens at the start that go to val (default: {DEFAULT_DATASET_VAL_TOKENS:,} for a dataset, "
                             f"10%% of the tokens for local files, which are then tokenized in memory first)")
    parser.add_argument("--max_tokens", type=int, default=None, help="stop after this many tokens, val included (default: all)")
    parser.add_argument("--min_batch_tokens", type=int, default=MIN_BATCH_TOKENS,
                        help="refuse input that leaves val or train fewer tokens than this: one batch of train.py "
                             "(batch_size*block_size+1; default %(default)s, the demo config's 16*128+1, the smallest "
                             "here); checked before writing when val is 10%%, else at the end; 0: no check")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="tokenizer processes (default: os.cpu_count(), here %(default)s)")
    parser.add_argument("--bench", action="store_true",
                        help=f"write nothing; print tokens/s of our tokenization and of tiktoken's encode_ordinary_batch "
                             f"on the same text (at most {BENCH_CHARS:,} characters) and cores")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    command = shlex.join(["python", "prepare_data.py", *(sys.argv[1:] if argv is None else argv)])
    with interrupted_cleanly():
        return run_command(args, command)


def run_command(args, command):
    try:
        if args.input and (args.dataset or args.name):
            raise ValueError("give local files (--input) or a Hugging Face dataset (--dataset, --name), not both")
        for flag, value, least in [("--shard_tokens", args.shard_tokens, 1), ("--val_tokens", args.val_tokens, 0),
                                   ("--max_tokens", args.max_tokens, 1), ("--workers", args.workers, 1),
                                   ("--min_batch_tokens", args.min_batch_tokens, 0)]:
            if value is not None and value < least:
                raise ValueError(f"{flag} must be at least {least}, not {value}")
        for flag, value in [("--shard_tokens", args.shard_tokens), ("--val_tokens", args.val_tokens)]:
            if value is not None and value < args.min_batch_tokens:  # the loader needs a whole batch within one shard
                raise ValueError(f"{flag} {value:,} is smaller than one batch of train.py (--min_batch_tokens "
                                 f"{args.min_batch_tokens:,}, batch_size*block_size+1); raise it, or lower --min_batch_tokens")
        get_encoding()  # fail now, with its fix, if GPT-2's tokenizer is not available offline
        if args.input:
            paths = expand_inputs(args.input)
            # absolute: data/a.txt and /home/me/repo/data/a.txt are the same source for a rerun
            source = {"files": [{"path": os.path.abspath(p), "bytes": os.path.getsize(p)} for p in paths],
                      "text_field": args.text_field}
            documents = read_documents(paths, args.text_field)
            val_tokens = args.val_tokens  # None: 10% of the tokens
        else:
            paths = None
            args.dataset, args.name = args.dataset or DEFAULT_DATASET, args.name or DEFAULT_DATASET_NAME
            source = {"dataset": args.dataset, "name": args.name, "split": args.split, "text_field": args.text_field}
            documents = DatasetStream(args.dataset, args.name, args.split, args.text_field)
            val_tokens = DEFAULT_DATASET_VAL_TOKENS if args.val_tokens is None else args.val_tokens

        if args.bench:
            result = benchmark(documents, args.workers)
            workers, ratio = result["workers"], result["tokens_per_s"] / result["tiktoken_tokens_per_s"]
            print(f"benchmark: {result['documents']:,} documents, {result['characters']:,} characters, "
                  f"{result['tokens']:,} tokens, {workers} workers, best of {result['repeats']}")
            print(f"  tiktoken encode_ordinary_batch ({workers} threads): {result['tiktoken_tokens_per_s']:,.0f} tokens/s")
            print(f"  prepare_data ({workers} processes, in order):     {result['tokens_per_s']:,.0f} tokens/s "
                  f"({ratio:.0%} of tiktoken)")
            return 0

        if val_tokens is not None and args.max_tokens is not None and args.max_tokens - val_tokens < max(1, args.min_batch_tokens):
            raise ValueError(f"--val_tokens {val_tokens:,} leaves {max(0, args.max_tokens - val_tokens):,} of --max_tokens "
                             f"{args.max_tokens:,} for train, fewer than one batch (--min_batch_tokens {args.min_batch_tokens:,})")
        prefix = args.prefix or default_prefix(args, paths)
        out_dir = args.out_dir or os.path.join("data", prefix)
        manifest = prepare(documents, out_dir, source, prefix, args.shard_tokens, val_tokens, args.max_tokens,
                           args.workers, command, args.min_batch_tokens)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Interrupted, or a KeyboardInterrupt raised before the handlers were in place
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"\ninterrupted ({signal.Signals(signum).name}); {RERUN_HINT}", file=sys.stderr)
        return 128 + signum
    shards = manifest["shards"]
    print(f"{out_dir}: {len(shards)} shards ({shards[0]['file']} ... {shards[-1]['file']}), "
          f"{manifest['tokens']['val']:,} val + {manifest['tokens']['train']:,} train tokens, "
          f"{manifest['documents']:,} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
