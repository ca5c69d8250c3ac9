"""Files: every write is atomic, every read of a ``.pt`` file is safe.

* :func:`atomic_write` writes to a temporary file in the same folder, syncs it, then
  renames it into place, so a crash never leaves a half-written file; a killed write
  leaves only a ``.NAME.*.tmp`` file, which :func:`remove_stale_temporaries` deletes.
* :func:`load_torch_file` loads with ``weights_only=True`` (tensors and plain data only:
  the package never loads pickled code) and turns every failure into one
  :class:`FileFormatError` that names the file.
* :func:`machine_info` describes the machine a run or benchmark ran on.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


class FileFormatError(ValueError):
    """A file that is not what the package expected (damaged, truncated or foreign)."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON (numbers that are not JSON become floats), atomically."""
    text = json.dumps(data, indent=1, default=float) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.*.tmp`` files that killed atomic writes left in ``folder``; returns them."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with one clear error for a missing,
    damaged or foreign file (``what`` names what it should be, e.g. "checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, TypeError):
        # torch's own message advises weights_only=False: never take that advice for a file
        # you did not write yourself, so it is not repeated here
        raise FileFormatError(
            f"{path} is not a valid {what}: it is damaged, truncated, or holds more than tensors and plain "
            "data (the package never loads pickled code). Write it again with this package."
        ) from None


def machine_info(device: torch.device | str = "cpu") -> dict[str, str]:
    """CPU model, cores, torch version and threads, device (and GPU name on CUDA)."""
    device = torch.device(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": f"{cpu} ({platform.machine()})",
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "device": str(device),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
