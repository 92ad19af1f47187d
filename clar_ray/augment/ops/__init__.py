"""The augmentations, one module each; :mod:`clar_ray.augment.presets` registers them.

Each module holds everything about its augmentation (see :mod:`clar_ray.augment.spec`): the
``*Params`` dataclass, the draw, the numpy batch transform, the torch batch transform, how the
official code's version differs (the ``clar-code`` preset), and its ``SPEC``.
"""
