"""
The texts the CPU targets train on, found or fetched (prepare_data.py then tokenizes them).

    python get_text.py tinyshakespeare   # prints the path of Tiny Shakespeare: ../shared/data's copy, else downloaded
    python get_text.py pydoc             # writes Python's help() topics into data/pydoc_text/ (no download)
    python get_text.py pystdlib          # writes the standard library's sources into data/pystdlib_text/ (no download)

Tiny Shakespeare is Karpathy's char-rnn corpus (1.1 MB, data/tinyshakespeare/input.txt of
karpathy/char-rnn). It is taken from --shared when that folder holds it (as on the machines this
project is developed on), else downloaded once into data/text/; either way its sha256 must match.
When it cannot be had (offline), one line says so and the exit status is 1: the Makefile then
falls back to the pydoc text, which ships with Python itself.
"""

import argparse
import hashlib
import os
import sys
import sysconfig
import urllib.request

from cheapgpt2.common import REPO, write_atomically

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_FILE = "tinyshakespeare.txt"
DOWNLOAD_SECONDS = 30  # per network operation: offline fails in seconds, not minutes


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tinyshakespeare(shared_dir, download_dir):
    """The path of Tiny Shakespeare, checked against its sha256, and where it came from; ValueError if it cannot be had."""
    url = TINYSHAKESPEARE_URL
    for path, origin in [(os.path.join(shared_dir, TINYSHAKESPEARE_FILE), "found"),
                         (os.path.join(download_dir, TINYSHAKESPEARE_FILE), "downloaded earlier")]:
        if os.path.exists(path):
            if sha256_of(path) != TINYSHAKESPEARE_SHA256:
                raise ValueError(f"{path} is not Tiny Shakespeare (its sha256 differs from {TINYSHAKESPEARE_SHA256}); "
                                 f"delete it or put the original there")
            return path, origin
    path = os.path.join(download_dir, TINYSHAKESPEARE_FILE)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_SECONDS) as response:
            data = response.read()
    except (OSError, ValueError) as e:  # URLError, a timeout, a refused connection
        reason = getattr(e, "reason", None) or e
        raise ValueError(f"could not download Tiny Shakespeare from {url} ({reason}), and {shared_dir} does not "
                         f"hold {TINYSHAKESPEARE_FILE}") from None
    if hashlib.sha256(data).hexdigest() != TINYSHAKESPEARE_SHA256:
        raise ValueError(f"the download from {url} has sha256 {hashlib.sha256(data).hexdigest()}, not Tiny Shakespeare's "
                         f"{TINYSHAKESPEARE_SHA256}; kept nothing")
    write_atomically(path, data)
    return path, f"downloaded from {url}"


def write_pydoc_text(out_dir):
    """Python's help() topics (pydoc_data), one .txt per topic: English prose that needs no download."""
    import pydoc_data.topics

    for name, text in pydoc_data.topics.topics.items():
        write_atomically(os.path.join(out_dir, f"{name}.txt"), text.encode())
    return len(pydoc_data.topics.topics)


def write_stdlib_text(out_dir):
    """The sources of Python's standard library (its top-level modules), one .txt per module: 4.7 MB of code and
    docstrings that every Python ships, for a run that needs more tokens than the help() topics (make gpu_check)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    names = sorted(name for name in os.listdir(stdlib) if name.endswith(".py"))
    for name in names:
        with open(os.path.join(stdlib, name), "rb") as f:
            write_atomically(os.path.join(out_dir, name[:-len(".py")] + ".txt"), f.read())
    return len(names)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("text", choices=["tinyshakespeare", "pydoc", "pystdlib"], help="which text")
    parser.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "data"),
                        help="a folder that may already hold tinyshakespeare.txt (default: ../shared/data beside the checkout)")
    parser.add_argument("--out_dir", default=None,
                        help="where a download or the Python text goes (default: data/text for tinyshakespeare, "
                             "data/TEXT_text for pydoc and pystdlib)")
    args = parser.parse_args(argv)
    try:
        if args.text in ("pydoc", "pystdlib"):
            out_dir = args.out_dir or os.path.join("data", f"{args.text}_text")
            write, what = ((write_pydoc_text, "help() topics") if args.text == "pydoc" else
                           (write_stdlib_text, "standard library modules"))
            count = write(out_dir)
            print(f"{args.text}: {count} {what} of Python {sys.version.split()[0]} in {out_dir}/", file=sys.stderr)
            print(os.path.join(out_dir, "*.txt"))
        else:
            path, origin = tinyshakespeare(os.path.normpath(args.shared), args.out_dir or os.path.join("data", "text"))
            print(f"tinyshakespeare: {origin} {path} (sha256 checked)", file=sys.stderr)
            print(path)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
