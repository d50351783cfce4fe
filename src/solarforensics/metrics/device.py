"""Which device the metrics run on, and in which dtype they accumulate."""

from __future__ import annotations

import os
import platform

import torch

from solarforensics.errors import SpecError

DeviceLike = str | torch.device

_ACCUMULATION_NAMES = {
    "fp64": torch.float64,
    "float64": torch.float64,
    "double": torch.float64,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def resolve_device(name: DeviceLike = "auto") -> torch.device:
    """Turn `auto`, `cpu`, `cuda` or `cuda:N` into a usable torch.device (auto = cuda if present, else cpu)."""
    if isinstance(name, torch.device):
        name = str(name)
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SpecError(f"device {name!r} requested but no CUDA GPU is available", "use --device cpu or auto")
        try:
            device = torch.device(text)
        except RuntimeError:
            raise SpecError(f"cannot understand device {name!r}", "use auto, cpu, cuda or cuda:N") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible",
                "use cuda:0 or auto",
            )
        return device
    raise SpecError(f"cannot understand device {name!r}", "use auto, cpu, cuda or cuda:N")


def default_accumulation(device: torch.device) -> torch.dtype:
    """Float64 on every device: fp32 (faster on GPUs) is used only when a caller asks for it explicitly."""
    del device  # the policy is the same everywhere; the argument keeps call sites ready for a per-device choice
    return torch.float64


def resolve_accumulation(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Parse `fp64`/`fp32` (None = the default); fp32 is refused on CPU, where it saves nothing worth the precision."""
    if name is None:
        return default_accumulation(device)
    dtype = name if isinstance(name, torch.dtype) else _ACCUMULATION_NAMES.get(str(name).strip().lower())
    if dtype not in (torch.float64, torch.float32):
        raise SpecError(f"unknown accumulation dtype {name!r}", "use fp64, or fp32 on CUDA")
    if dtype == torch.float32 and device.type != "cuda":
        raise SpecError("fp32 accumulation is only allowed on CUDA", "drop the option, or run with --device cuda")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float64` -> `float64`: the spelling written into results."""
    return str(dtype).removeprefix("torch.")


def describe_device(device: torch.device) -> str:
    """A one-line human description for results and reports, e.g. `cuda:0 (NVIDIA H100, 79.1 GiB)`."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if device.type == "cpu":
        cores = os.cpu_count() or 1
        return f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads of {cores} cores)"
    return str(device)
