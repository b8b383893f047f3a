"""Small helpers shared by the benchmark scripts in this folder.

- :func:`resolve_device` / :func:`synchronize`: pick ``cpu``/``cuda`` ("auto") and wait for queued kernels;
- :func:`command_line`: the exact command that produced a result (``python benchmarks/x.py --flag ...``);
- :func:`env_info`: torch / Python versions, device name, CPU count, threads, git commit;
- :func:`write_results`: write a results JSON with ``command`` and ``env`` metadata (atomically);
- :func:`save_figure`: save a matplotlib figure (headless ``Agg`` backend) and close it.

Only the standard library and torch are imported at module load; matplotlib is imported lazily by
:func:`pyplot`, so a benchmark's worker subprocesses don't pay for it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; explicit names are checked."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (no-op on CPU); call before reading a timer."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def command_line(argv: list[str] | None = None) -> str:
    """The command as it was typed, e.g. ``python benchmarks/strategy.py --repeats 2``."""
    argv = sys.argv if argv is None else argv
    return shlex.join(["python", *argv])


def git_commit(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """HEAD commit and whether the working tree has uncommitted changes (None when not a git repo)."""
    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_count() -> dict[str, int | None]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {"logical": os.cpu_count(), "usable": usable}


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Environment metadata recorded with every result file."""
    device = torch.device(device) if device is not None else None
    info: dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "git": git_commit(),
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            idx = device.index if device.index is not None else torch.cuda.current_device()
            props = torch.cuda.get_device_properties(idx)
            info["device_name"] = props.name
            info["device_memory_mb"] = round(props.total_memory / 2**20)
            info["cudnn"] = torch.backends.cudnn.version()
        else:
            info["device_name"] = info["processor"]
    return info


def write_results(path: str | Path, payload: Mapping[str, Any], device: torch.device | str | None = None,
                  argv: list[str] | None = None, env: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"command", "argv", "cwd", "env", **payload}`` as indented JSON (tmp file + rename).

    ``env`` defaults to :func:`env_info` now; pass the one taken when the run started so the
    recorded git commit is the code that ran (other work may commit meanwhile).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = sys.argv if argv is None else argv
    doc = {"command": command_line(argv), "argv": list(argv), "cwd": os.getcwd(),
           "env": dict(env) if env is not None else env_info(device), **payload}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` (creating the folder), then close it to free memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return path
