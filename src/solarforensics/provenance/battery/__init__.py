"""The provenance battery, one module per test; each reads like the algorithm it implements.

identity, norm_gains, residual_alignment, cka, layer_alignment, matching, corroborative; `weights` is what they share:
one model's tensors by canonical role and layer, with norm gains folded and residual dimensions aligned.
"""
