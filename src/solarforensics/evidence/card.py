"""A model card's YAML front matter (README.md), read safely and within bounds."""

import yaml

FRONT_MATTER_LIMIT = 64 << 10


def parse_front_matter(text: str) -> tuple[dict | None, str | None]:
    """(front matter as a dict or None, a warning instead of an error when it is broken)."""
    lines = (text or "").splitlines()
    if not lines or lines[0].strip() != "---":
        return None, None
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() in ("---", "...")), None)
    block = "\n".join(lines[1:end]) if end else ""
    if end is None or len(block) > FRONT_MATTER_LIMIT:
        return None, "README.md front matter is unterminated or over 64 KiB; its licence fields were not read"
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as err:
        return None, f"README.md front matter is not valid YAML ({str(err).splitlines()[0]}); licence fields not read"
    return (data if isinstance(data, dict) else None), None
