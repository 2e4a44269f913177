"""Checkpoints: official OFA / IFSeg ``.pt`` files (safe loading) and the ifseg-deploy bundle."""

from .loader import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
