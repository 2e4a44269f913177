"""ifseg-deploy: image-free semantic segmentation (IFSeg / SegOFA) for edge deployment."""

__version__ = "0.1.0"
