"""Pure tensor math on CPU or CUDA: pair similarity (streamed), row and layer matrices, hashes, nulls, p-values.

Modules: device (where, in which dtype), similarity (pair_stats), matrices (per-row and L x L comparisons),
hashing (SHA-256 of bytes), nulls (permutation and reference nulls), stats (log-space p-values).
Imports nothing of ours but `errors`.
"""
