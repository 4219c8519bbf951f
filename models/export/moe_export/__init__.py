"""Export Hugging Face Mixture-of-Experts checkpoints to moed model packages (see models/FORMAT.md)."""

FORMAT_VERSION = 3

__all__ = ["FORMAT_VERSION"]
