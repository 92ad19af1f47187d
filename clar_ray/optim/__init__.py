"""Optimisation: LARS with parameter groups chosen by module type, and the lr schedule."""

from clar_ray.optim.lars import LARS, NORM_LAYERS, param_groups
from clar_ray.optim.schedule import lr_at, scaled_lr, warmup_cosine

__all__ = ["LARS", "NORM_LAYERS", "lr_at", "param_groups", "scaled_lr", "warmup_cosine"]
