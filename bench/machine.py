"""What the figures were measured on: CPU, memory, load, library versions."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import psutil

PACKAGES = ("onnxruntime", "torch", "torchvision", "captum", "grpcio", "tritonclient", "torchserve", "pillow", "numpy")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict[str, Any]:
    """A JSON-ready description of this machine and the software under test."""
    memory = psutil.virtual_memory()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cpus": psutil.cpu_count(logical=False),
        "memory_gib": round(memory.total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "gpu": _gpu(),
        "packages": {p: _version(p) for p in PACKAGES},
    }


def _gpu() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover - torch is always installed here
        return None
