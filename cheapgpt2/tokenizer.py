"""
GPT-2's BPE tokenizer, available offline.

tiktoken downloads the BPE ranks on first use and caches them in TIKTOKEN_CACHE_DIR under the
sha1 of the download URL. With no internet (CI, an air-gapped cluster) that download fails, so
`make setup` runs ensure_tokenizer() once to guarantee the cache:

    python download_tokens.py tokenizer                 # ensure the cache (what `make setup` does)
    TIKTOKEN_CACHE_DIR=../shared/tiktoken python download_tokens.py tokenizer

We use tiktoken's `r50k_base`: exactly the ranks, split pattern and <|endoftext|> (50256) of its
`gpt2` encoding, but read from a single cache file. When tiktoken's own download fails, the same
file is taken from the `openai-whisper` source release on PyPI (whisper/assets/gpt2.tiktoken,
byte-identical); we only download that archive, never install it.
"""

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile

PROJECT_CACHE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "tiktoken")
# Scripts run directly (not through make) still find the cache that `make setup` wrote.
os.environ.setdefault("TIKTOKEN_CACHE_DIR", PROJECT_CACHE_DIR)

import tiktoken  # noqa: E402  (reads TIKTOKEN_CACHE_DIR at call time, set just above)

from cheapgpt2.common import write_atomically

ENCODING_NAME = "r50k_base"
EOT_TOKEN = 50256
GPT2_VOCAB_SIZE = 50257  # the tokens it has; a model's rows past these (vocab_size 50304) only pad the matrices
RANKS_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
WHISPER_SDIST = "openai-whisper==20250625"  # its whisper/assets/gpt2.tiktoken has RANKS_SHA256


def get_encoding():
    """GPT-2's tiktoken encoding, or a ValueError that says how to get it offline."""
    try:
        return tiktoken.get_encoding(ENCODING_NAME)
    except Exception as e:
        raise ValueError(
            f"GPT-2 tokenizer ({ENCODING_NAME}) is not available offline in "
            f"TIKTOKEN_CACHE_DIR={os.environ['TIKTOKEN_CACHE_DIR']} ({type(e).__name__}); "
            f"run `make setup` (or `python download_tokens.py tokenizer`) once with access to PyPI"
        ) from None


def cache_path(cache_dir):
    # tiktoken's cache key: the sha1 of the URL the ranks are downloaded from.
    return os.path.join(cache_dir, hashlib.sha1(RANKS_URL.encode()).hexdigest())


def ranks_from_whisper_sdist():
    """Download openai-whisper's source archive from PyPI (no install) and return gpt2.tiktoken's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", tmp, WHISPER_SDIST]
        subprocess.run(cmd, check=True)
        (archive,) = [os.path.join(tmp, f) for f in os.listdir(tmp)]
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken"))
            return tar.extractfile(member).read()


def ensure_tokenizer():
    """Make get_encoding() work offline from now on; raise ValueError if no source works."""
    cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    try:
        get_encoding()  # cached already, or tiktoken's own download worked
        return f"GPT-2 tokenizer ready in {cache_dir}"
    except ValueError:
        pass
    print(f"tiktoken could not download {ENCODING_NAME}; taking it from PyPI's {WHISPER_SDIST} source archive")
    try:
        data = ranks_from_whisper_sdist()
    except Exception as e:
        raise ValueError(f"could not obtain GPT-2's BPE ranks from tiktoken or PyPI ({e}); "
                         f"copy a tiktoken cache holding {ENCODING_NAME} into {cache_dir}") from None
    if hashlib.sha256(data).hexdigest() != RANKS_SHA256:
        raise ValueError(f"gpt2.tiktoken from {WHISPER_SDIST} has an unexpected sha256; refusing to use it")
    write_atomically(cache_path(cache_dir), data)
    get_encoding()
    return f"GPT-2 tokenizer ready in {cache_dir} (from {WHISPER_SDIST})"
