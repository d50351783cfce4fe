"""`provenance`: was one model initialised from the other? The anytime lean path by default
(provenance/anytime.py), the whole-matrix path with `full` (provenance/whole.py)."""

from __future__ import annotations

from solarforensics.models import OpenOptions
from solarforensics.provenance.anytime import sequential_models
from solarforensics.provenance.pair import TESTS, Announce, Progress, ProvenanceRequest, parse_tests
from solarforensics.provenance.whole import whole_models

__all__ = ["TESTS", "ProvenanceRequest", "parse_tests", "provenance_models"]


def provenance_models(request: ProvenanceRequest, options: OpenOptions | None = None,
                      progress: Progress | None = None, announce: Announce | None = None) -> dict:
    """The fields of a `provenance` results document."""
    path = whole_models if request.full else sequential_models
    return path(request, options, progress, announce)
