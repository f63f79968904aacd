"""Where a run executes: device and precision choice, and the facts recorded about the machine."""
from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import torch

from .models import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEVICE_PATTERN = re.compile(r"(auto|cpu|cuda(:[0-9]{1,4})?)")
DEVICES_ALLOWED = "auto, cpu, cuda or cuda:N (N: a GPU index)"


def device_problem(name: str, gpus: int | None = None) -> str | None:
    """Why `name` cannot train on this machine (None when it can): a malformed name, or a GPU this machine does
    not have. `gpus` overrides the number of GPUs found (tests). Checked where a run is submitted to run here."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        return f"device must be {DEVICES_ALLOWED}, got {name!r}"
    if not name.startswith("cuda"):
        return None
    count = gpus if gpus is not None else (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if count == 0:
        return f"device {name!r} needs a CUDA GPU and this machine has none; use device auto or cpu"
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= count:
        return f"device {name!r} does not exist: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
    return None


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is the first CUDA GPU when there is one, else the CPU. An unavailable GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(name)
    if problem:
        raise ConfigError(problem)
    return torch.device(name)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off, and
    torch and oneDNN may use it: ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 (how an AVX2-only CPU is
    emulated on a newer one) leave only emulated bf16, about 1 GFLOP/s."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and isa not in ("ALL", "DEFAULT") and "BF16" not in isa and "AMX" not in isa:
        return False
    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' picks bf16 where measured faster: CUDA GPUs with bf16, and CPUs with native bf16 (2.1-2.3x
    the fp32 images/s for ResNet-20/56 on a 2-core AVX512-BF16 CPU); fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The project's git revision, with '+dirty' when the work tree has changes; 'unknown' outside git."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if rev and dirty else "")


MPS_PIPE_DEFAULT = "/tmp/nvidia-mps"   # where nvidia-cuda-mps-control puts its pipes unless told otherwise


def mps_status(environ: dict | None = None, proc: Path = Path("/proc")) -> dict:
    """Whether a CUDA MPS control daemon serves this machine, so packed runs share the GPU's compute at once
    instead of time-slicing it: {'running': bool, 'pipe_directory': ..., 'how': what found it or how to start
    it}. Found by its control pipe (in $CUDA_MPS_PIPE_DIRECTORY, default /tmp/nvidia-mps) or by a running
    nvidia-cuda-mps-control process. `environ` and `proc` are for tests."""
    environ = os.environ if environ is None else environ
    pipes = environ.get("CUDA_MPS_PIPE_DIRECTORY") or MPS_PIPE_DEFAULT
    if (Path(pipes) / "control").exists():
        return {"running": True, "pipe_directory": pipes, "how": f"control pipe {Path(pipes) / 'control'}"}
    try:
        for comm in proc.glob("[0-9]*/comm"):
            try:
                name = comm.read_text().strip()
            except OSError:
                continue
            if name.startswith("nvidia-cuda-mps"):  # the kernel keeps 15 characters of a process name
                return {"running": True, "pipe_directory": pipes, "how": f"process {name} (pid {comm.parent.name})"}
    except OSError:
        pass
    return {"running": False, "pipe_directory": pipes,
            "how": "not running; start it with `nvidia-cuda-mps-control -d` (stop: `echo quit | "
                   "nvidia-cuda-mps-control`) so runs packed on a GPU (--per-gpu) execute at the same time"}


def compile_cache_dir(environ: dict | None = None) -> Path:
    """Where torch.compile keeps compiled code between runs: $LAB_COMPILE_CACHE, else the user's own cache,
    `lab/compile` under $XDG_CACHE_HOME (default ~/.cache). Never the results folder: on a cache hit inductor
    loads pickled graphs and shared objects, so whoever can write the cache can run code in every compiled run;
    a results folder is often shared, a user's cache is not. `environ` is for tests."""
    environ = os.environ if environ is None else environ
    if environ.get("LAB_COMPILE_CACHE"):
        return Path(environ["LAB_COMPILE_CACHE"])
    base = environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if Path(base).is_absolute() else Path.home() / ".cache"  # the spec ignores relative paths
    return root / "lab" / "compile"


def use_compile_cache(folder: Path) -> None:
    """Point inductor's and Triton's on-disk caches at `folder`, so a second run of the same shapes (same
    model, batch and mode) loads its compiled kernels instead of compiling them again. The folder is created
    readable and writable by its owner only (mode 0700), and made so when this user owns it already."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        if folder.stat().st_uid == os.getuid():
            folder.chmod(0o700)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")


def environment(device: torch.device) -> dict:
    """Facts recorded with every run."""
    try:
        import torchvision

        tv = torchvision.__version__
    except Exception:  # torchvision is optional for synthetic data
        tv = None
    return {
        "torch": torch.__version__,
        "torchvision": tv,
        "python": sys.version.split()[0],
        "device": str(device),
        "device_name": device_name(device),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "git": git_revision(),
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        **({"cuda_mps": mps_status()["running"]} if device.type == "cuda" else {}),
    }
