"""Pairwise comparison: `compare` (per-tensor metrics with nulls and baselines), `matrix` (every pair of models),
`inspect` (one model's headers); `pairing` matches tensors across models, `statements` says what the numbers mean."""
