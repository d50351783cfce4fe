"""Canonical tensor roles <-> on-disk names, one TOML file per model family (configs/families/): the roles
(roles.py), a loaded family and its name matching (family_map.py), loading and finding families (family.py), plus
`--tensors` selection (selection.py) and model aliases (aliases.py). Imports nothing of ours but errors/datafiles."""
