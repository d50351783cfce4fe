"""Canonical tensor roles <-> on-disk names, one TOML file per model family (configs/families/), plus
`--tensors` selection (selection.py) and model aliases (aliases.py). Imports nothing of ours but errors/datafiles."""
