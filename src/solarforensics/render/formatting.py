"""How numbers, p-values, sizes and missing values are written in every report format."""

import json
import math
from typing import Any

MISSING = "—"
TINY_LOG10_P = -300.0  # below this a float p-value is meaningless; print the log instead


def fmt_num(value: Any, sig: int = 4) -> str:
    """A number with `sig` significant digits; values near ±1 keep enough digits to show their distance from 1."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 0.99 <= magnitude < 1:
        # A cosine of 0.99998 must not print as 1.000: show the gap to 1 with `sig - 2` digits of its own.
        gap = 1 - magnitude
        if gap < 1e-9:
            return f"{'-' if value < 0 else ''}1 − {gap:.2g}"
        decimals = min(12, -math.floor(math.log10(gap)) + sig - 2)
        return f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return f"{value:.{sig}g}"


def fmt_p(p_value: Any, log10_p: Any = None) -> str:
    """A p-value that is never printed as 0: tiny ones as 'p < 1e-300 (log10 p = -412.3)'."""
    if isinstance(log10_p, (int, float)) and not isinstance(log10_p, bool) and math.isfinite(log10_p):
        if log10_p < TINY_LOG10_P:
            return f"p < 1e-300 (log10 p = {log10_p:.1f})"
        if not isinstance(p_value, (int, float)) or p_value <= 0:
            p_value = 10.0**log10_p
    if not isinstance(p_value, (int, float)) or isinstance(p_value, bool):
        return MISSING
    if p_value <= 0:
        return "p < 1e-300 (underflow)"
    if p_value >= 1e-3:
        return f"{p_value:.3g}"
    return f"{p_value:.2e}".replace("e-0", "e-")


def fmt_int(value: Any) -> str:
    """An integer with thousands separators."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else fmt_num(value)


def fmt_bytes(value: Any) -> str:
    """Bytes as exact count plus a binary-prefixed size: '1,536 (1.5 KiB)'."""
    if not isinstance(value, int) or isinstance(value, bool):
        return fmt_num(value)
    if value < 1024:
        return f"{value:,} B"
    size = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024:
            break
    return f"{value:,} ({size:.3g} {unit})"


def fmt_count(value: Any) -> str:
    """A large count with a short form: '102,345,678,912 (102.3 B)'."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 10_000:
        return fmt_num(value)
    for divisor, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= divisor:
            return f"{value:,} ({value / divisor:.4g} {unit})"
    return f"{value:,}"


def fmt_seconds(value: Any) -> str:
    """Seconds with sensible precision."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return fmt_num(value)
    return f"{value:.3g} s" if value < 100 else f"{value:,.0f} s"


def fmt_value(value: Any, limit: int = 160, nested: bool = False) -> str:
    """Any JSON value as one short line (dicts as 'k=v, ...', inner lists in brackets, long text cut with '…')."""
    if isinstance(value, dict):
        text = ", ".join(f"{key}={fmt_value(item, limit, True)}" for key, item in value.items())
    elif isinstance(value, list):
        if all(not isinstance(item, (dict, list)) for item in value):
            text = ", ".join(fmt_value(item, limit, True) for item in value)
            text = f"[{text}]" if nested else text
        else:
            text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, str):
        text = value
    else:
        text = fmt_num(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
