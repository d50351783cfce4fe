"""The ground-truth zoo: tiny dense (llama) and MoE (mixtral) decoders trained here on the CPU, derived and
disguised, with a manifest."""
