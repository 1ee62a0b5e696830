"""Sweeps: search spaces and the Ray Tune + Optuna driver around a training recipe."""
