"""Image-free training (IFSeg): artificial images of category words, no images or labels needed."""

from ..artificial.images import ArtificialBatch, ArtificialImages, cell_embeddings, stream_seed
from ..text.categories_file import ClassSpec, flat_classes, parse_category_spec, read_categories_file
from .holdout import holdout_metrics
from .loss import imfree_loss, upsampled_cross_entropy
from .optim import FairseqAdam, cosine_lr
from .stopping import TrainingAborted, TrainingStopped
from .trainer import TrainConfig, Trainer, TrainResult, state_path, train

__all__ = [
    "ArtificialBatch",
    "ArtificialImages",
    "ClassSpec",
    "FairseqAdam",
    "TrainConfig",
    "TrainResult",
    "TrainingAborted",
    "TrainingStopped",
    "Trainer",
    "cell_embeddings",
    "cosine_lr",
    "flat_classes",
    "holdout_metrics",
    "imfree_loss",
    "parse_category_spec",
    "read_categories_file",
    "state_path",
    "stream_seed",
    "train",
    "upsampled_cross_entropy",
]
