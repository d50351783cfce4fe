"""The ground-truth zoo: tiny llama-style decoders trained here on the CPU, derived and disguised, with a manifest."""
