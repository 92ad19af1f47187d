"""clar-ray: contrastive learning of audio representations (CLAR, ACL, SLICER) on Ray."""

__version__ = "0.1.0"
