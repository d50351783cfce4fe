"""A fingerprint as stored: identity and metadata (JSON) beside named arrays (safetensors bytes), in one index row.

Safetensors is the array format because we already parse it strictly and it cannot carry code: an index shared by
someone else is data, never something that runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
from safetensors.torch import load as load_arrays
from safetensors.torch import save as save_arrays

from solarforensics.errors import FormatError
from solarforensics.population.index import Entry

FORMAT_VERSION = 1
PREFILTER = "prefilter."  # arrays stored apart, so a scan ranks every model without loading whole fingerprints


@dataclass
class Fingerprint:
    """What `scan` and `lineage` know of one model: `meta` (source, architecture, tokenizer, Hub metadata, cost of
    reading) and `arrays` (the statistics, see sketch.py)."""

    spec: str
    meta: dict
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def source(self) -> dict:
        return self.meta.get("source", {})

    def to_entry(self) -> Entry:
        data = save_arrays({k: v.contiguous() for k, v in self.arrays.items() if not k.startswith(PREFILTER)})
        prefilter = save_arrays({k: v.contiguous() for k, v in self.arrays.items() if k.startswith(PREFILTER)})
        source = self.source
        return Entry(self.spec, source.get("repo") or source.get("path"), source.get("resolved_commit"),
                     source.get("endpoint"), self.meta.get("arch", {}).get("family"), FORMAT_VERSION,
                     self.meta.get("fingerprinted_at") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     self.meta, data, prefilter)

    @classmethod
    def from_entry(cls, entry: Entry) -> Fingerprint:
        if entry.version > FORMAT_VERSION:
            raise FormatError(f"the fingerprint of {entry.spec} has format {entry.version}, newer than this "
                              f"solarforensics reads ({FORMAT_VERSION})", "upgrade solarforensics")
        try:
            arrays = load_arrays(entry.data) | (load_arrays(entry.prefilter) if entry.prefilter else {})
        except Exception as err:  # noqa: BLE001 - the library's errors vary; all mean a damaged row
            raise FormatError(f"the fingerprint of {entry.spec} is damaged ({type(err).__name__})",
                              "fingerprint the model again") from None
        return cls(entry.spec, entry.meta, arrays)

    def summary(self) -> dict:
        """The row `index list` and `index show` print."""
        arch, hub, cost = self.meta.get("arch", {}), self.meta.get("hub", {}), self.meta.get("cost", {})
        return {"model": self.spec, "repo": self.source.get("repo") or self.source.get("path"),
                "commit": self.source.get("resolved_commit"), "family": arch.get("family"),
                "layers": arch.get("num_layers"), "hidden": arch.get("hidden_size"),
                "vocab": arch.get("vocab_size"), "declared_base_model": hub.get("base_model"),
                "license": hub.get("license"), "created_at": hub.get("created_at"),
                "bytes_read": cost.get("bytes_read"), "fraction_read": cost.get("fraction_read"),
                "fingerprinted_at": self.meta.get("fingerprinted_at"),
                "stored_bytes": sum(v.numel() * v.element_size() for v in self.arrays.values())
                + len(json.dumps(self.meta))}
