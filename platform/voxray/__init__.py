"""voxray: train and tune text-to-speech models on Ray."""

__version__ = "0.1.0"
