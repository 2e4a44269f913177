"""Image-free training (IFSeg): artificial images of category words, no images or labels needed."""

from .artificial import ArtificialBatch, ArtificialImages, cell_embeddings, stream_seed
from .categories_file import ClassSpec, classes_from_text, flat_classes, parse_categories_file
from .holdout import holdout_metrics
from .loss import imfree_loss, upsampled_cross_entropy
from .optim import FairseqAdam, cosine_lr
from .trainer import TrainConfig, Trainer, TrainResult, state_path, train

__all__ = [
    "ArtificialBatch",
    "ArtificialImages",
    "ClassSpec",
    "FairseqAdam",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "cell_embeddings",
    "classes_from_text",
    "cosine_lr",
    "flat_classes",
    "holdout_metrics",
    "imfree_loss",
    "parse_categories_file",
    "state_path",
    "stream_seed",
    "train",
    "upsampled_cross_entropy",
]
