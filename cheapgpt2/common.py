"""
The helpers every program shares, one home each: the device to run on, atomic writes, the output folders, and
the hardware a figure was measured on.
"""

import contextlib
import json
import os
import platform
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: configs/, media/, c/

# ----------------------------------------------------------------------------------------------------
# the device


def cuda_missing_reason():
    """Why torch sees no GPU, in one clause, with the command that shows it."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU build: on a GPU machine `make setup` installs the CUDA build"
    return (f"CUDA was not found (torch {torch.__version__} for CUDA {torch.version.cuda}: torch.cuda.is_available() is "
            f"False); usually the NVIDIA driver is older than this torch wheel needs: compare the CUDA version "
            f"`nvidia-smi` prints with `python -c 'import torch; print(torch.version.cuda)'`")


def pick_device(name, local_rank=0, ddp=False, cuda_available=None):
    """The torch device for --device NAME: "auto" picks CUDA when present; under torchrun "cuda" means this
    process's own GPU, cuda:LOCAL_RANK (else every rank would share GPU 0). ValueError when CUDA is asked for
    and absent."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if name == "auto":
        name = "cuda" if cuda_available else "cpu"
    if name.startswith("cuda") and not cuda_available:
        raise ValueError(f"--device={name}, but {cuda_missing_reason()}; --device=cpu forces the CPU")
    if name == "cuda" and ddp:
        name = f"cuda:{local_rank}"
    return name


def process_start_time():
    """When this process started, on time.time()'s clock: the cost of a run counts from its launch, the seconds
    of its imports too. Linux's /proc/self/stat gives the start in clock ticks after boot and /proc/stat the boot
    time in whole seconds (so up to a second early); elsewhere, now."""
    try:
        with open("/proc/self/stat") as f:
            ticks_after_boot = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return min(boot + ticks_after_boot / os.sysconf("SC_CLK_TCK"), time.time())
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


# ----------------------------------------------------------------------------------------------------
# atomic writes and output folders


@contextlib.contextmanager
def atomic_path(path):
    """The temporary twin of path for a writer that opens files itself (torch.save, a GGUF writer): once the
    block ends its bytes are synced and it is renamed over path; on any failure (full disk, Ctrl-C) removed.
    path is always whole or untouched, and no temporary file stays behind."""
    tmp_path = path + ".tmp"
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())  # the rename must never expose a file whose bytes are not on disk yet
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


@contextlib.contextmanager
def atomic_write(path):
    """A binary file object that becomes path only once written whole (atomic_path)."""
    with atomic_path(path) as tmp_path, open(tmp_path, "wb") as f:
        yield f


def write_atomically(path, *parts):
    """Write parts (bytes, or str as UTF-8) to path through atomic_write, creating its folder: whole or untouched."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        for part in parts:
            f.write(part.encode() if isinstance(part, str) else part)


def write_json_atomic(obj, path):
    """obj as JSON to path, whole or not at all. Should that fail (the disk filled up, the folder went away
    during a long evaluation), the results go to a file in the system's temporary folder instead, so they are
    not lost: ValueError names it. Returns the path written."""
    text = json.dumps(obj, indent=1, default=str)  # default: lm-eval's results hold a few non-JSON values
    try:
        write_atomically(path, text)
        return path
    except OSError as e:
        with tempfile.NamedTemporaryFile("w", prefix="eval_results_", suffix=".json", delete=False) as f:
            f.write(text)
        raise ValueError(f"could not write {path} ({e.strerror or type(e).__name__}); "
                         f"the results are saved in {f.name}") from None


def make_writable_folder(folder):
    """Create folder if needed and write a probe file into it: OSError now rather than after the work."""
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, ".write_test")
    with open(probe, "w"):
        pass
    os.remove(probe)


def make_out_dir(out_dir):
    """A run's out_dir, created if needed, or one clear error: a file in the way, a read-only disk."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {out_dir} is a file, not a folder; choose another out_dir")
    try:
        make_writable_folder(out_dir)
    except OSError as e:
        raise OSError(f"cannot write to out_dir {out_dir} ({e.strerror or e}); choose a writable out_dir") from None


def check_writable(path):
    """An --out file path, checked before the work: its folder exists (or is created) and takes a new file."""
    if os.path.isdir(path):
        raise ValueError(f"--out {path} is a folder; pass a file path such as {os.path.join(path, 'results.json')}")
    try:
        make_writable_folder(os.path.dirname(os.path.abspath(path)))
    except OSError as e:
        raise ValueError(f"cannot write --out {path} ({e.strerror or type(e).__name__}); pass a path in a writable folder") from None


# ----------------------------------------------------------------------------------------------------
# the hardware a figure was measured on


def instruction_set(flags):
    """The vector instructions the kernels' speed depends on, in words, from /proc/cpuinfo's flags: the same model
    name (a VM's "AMD EPYC") has come with AVX2 only on one machine and AVX-512 with VNNI on another."""
    base = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "NEON" if "asimd" in flags else "no AVX2"
    extras = [name for name, present in (("VNNI", flags & {"avx512_vnni", "avx_vnni"}), ("AMX", "amx_int8" in flags)) if present]
    return base + (" with " + " and ".join(extras) if extras else "")


def cpu_name_and_flags():
    """('AMD EPYC', {'avx2', ...}) from /proc/cpuinfo; flags None where it is not there (macOS)."""
    cpu, flags = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and flags is None:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, flags


def hardware():
    """'AMD EPYC (AVX2), 2 cores, no GPU': the CPU's model name and instruction set, the cores, the GPU."""
    cpu, flags = cpu_name_and_flags()
    cpu += f" ({instruction_set(flags)})" if flags is not None else ""
    return f"{cpu}, {os.cpu_count()} cores" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU")


def describe_hardware(device_type, world_size):
    """What a training run ran on, for its log: '8 x NVIDIA H100 80GB HBM3' or 'CPU, 2 cores (AMD EPYC, AVX2)'."""
    if device_type == "cuda":
        return f"{world_size} x {torch.cuda.get_device_name()}"
    cpu, flags = cpu_name_and_flags()
    cpu += f", {instruction_set(flags)}" if flags is not None else ""
    return f"CPU, {os.cpu_count()} cores ({cpu})" + (f", {world_size} processes" if world_size > 1 else "")


def describe_machine():
    """The machine and the software a throughput figure depends on: the GPU, torch and CUDA; else the CPU."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{describe_hardware('cpu', 1)}, torch {torch.__version__}"
