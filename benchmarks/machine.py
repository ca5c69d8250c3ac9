"""Machine description printed by the benchmark scripts beside their measurements."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def machine_info(device: torch.device) -> dict[str, str]:
    """CPU model, cores, torch version and threads, device (and GPU name on CUDA)."""
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



def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
