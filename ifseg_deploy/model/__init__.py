"""The SegOFA network: backbone, encoder, surrogate decoder."""

from .segofa import SegOFA, grid_size

__all__ = ["SegOFA", "grid_size"]
