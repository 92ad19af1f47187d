"""Optimisation: LARS over SGD or Adam, parameter groups chosen by module type, the schedule."""

from clar_ray.optim.lars import LARS, NORM_LAYERS, param_groups
from clar_ray.optim.lars_adam import LarsAdam
from clar_ray.optim.schedule import lr_at, scaled_lr, warmup_cosine

__all__ = ["LARS", "NORM_LAYERS", "LarsAdam", "lr_at", "param_groups", "scaled_lr", "warmup_cosine"]
