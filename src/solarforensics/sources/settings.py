"""Tuning read from the environment, each with its bounds. A value out of bounds or not a number is never used: the
CLI checks them all before a command runs (`check_environment`) and stops with one line naming the variable."""

import math
import os

from solarforensics.errors import SpecError

# name: (kind, default, lowest, highest)
BOUNDS: dict[str, tuple[type, float, float, float]] = {
    "SOLARFORENSICS_TIMEOUT": (float, 60.0, 0.05, 3600.0),  # seconds per network read
    "SOLARFORENSICS_RETRIES": (int, 5, 0, 20),  # retries of 429/5xx/connection errors
    "SOLARFORENSICS_WORKERS": (int, 16, 1, 256),  # concurrent range requests
    "SOLARFORENSICS_MAX_GAP": (int, 1 << 20, 0, 1 << 30),  # bytes read through between two wanted ranges
    "SOLARFORENSICS_MAX_SPAN": (int, 64 << 20, 1 << 16, 1 << 32),  # bytes of one request, at most
    "SOLARFORENSICS_OVERREAD": (float, 0.02, 0.0, 1.0),  # share of extra bytes read in gaps, at most
}


def _parse(name: str, raw: str):
    kind, _, low, high = BOUNDS[name]
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SpecError(f"{name}={raw[:40]!r} is not {'an integer' if kind is int else 'a number'}",
                        f"use a value from {low:g} to {high:g}, or unset it") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise SpecError(f"{name}={raw[:40]!r} is out of bounds", f"use a value from {low:g} to {high:g}, or unset it")
    return value


def setting(name: str):
    """The value of a tuning variable, its default when unset or unusable (check_environment reports the latter)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return BOUNDS[name][1]
    try:
        return _parse(name, raw)
    except SpecError:
        return BOUNDS[name][1]


def check_environment() -> None:
    """One SpecError for the first tuning variable that is set to something unusable."""
    for name in BOUNDS:
        raw = os.environ.get(name)
        if raw is not None and raw.strip():
            _parse(name, raw)
