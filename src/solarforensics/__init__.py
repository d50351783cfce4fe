"""White-box model-provenance forensics for LLM checkpoints."""

__version__ = "0.1.0"
