"""Validation splits in their standard folder layouts: finding image/label pairs, class lists and
the ground-truth remapping of the reference protocol.

* ``ade20k``: ``ADEChallengeData2016/images/validation/*.jpg`` + ``annotations/validation/*.png``;
  png 0 = ignore, k = class k-1 (1..150), 255 = ignore (mmsegmentation's ``reduce_zero_label``).
* ``coco-stuff`` (171 classes), ``coco-stuff-27``, ``coco-stuff-unseen15``: COCO-Stuff-164k as
  converted for mmsegmentation, ``images/val2017/*.jpg`` + ``annotations/val2017/*_labelTrainIds.png``
  (0..170 = fine classes, 255 = ignore); the 27 coarse classes merge fine ones, the unseen split
  keeps its 15 classes and ignores every other pixel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import IFSegError
from ..fileio import IMAGE_EXTS
from .classes import ADE20K_CLASSES, COCO_STUFF_27, COCO_STUFF_CLASSES, COCO_UNSEEN_15, coarse_of_fine, coarse_words
from .labels import LabelMapping
from .metrics import IGNORE

#: Stored value of unlabelled pixels in mmsegmentation's label maps.
STORED_IGNORE = 255
DATASETS = ("ade20k", "coco-stuff", "coco-stuff-27", "coco-stuff-unseen15")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's validation files are and how its labels become class indices."""

    name: str
    categories: Tuple[str, ...]
    mapping: LabelMapping
    image_dir: str  # relative to the dataset root
    label_dir: str
    label_suffix: str  # label file = <key><label_suffix>.png, image = <key>.<ext>
    parents: Tuple[str, ...] = ()  # accepted wrapping folders: --root may point at their parent
    class_words: Optional[Dict[str, Tuple[str, ...]]] = field(default=None, compare=False)  # hierarchical classes
    reduce_zero_label: bool = False  # stored 0 = ignore, k = class k-1 (mmsegmentation's convention)


@dataclass(frozen=True)
class Sample:
    key: str
    image: str
    label: str


def _coco(
    name: str, categories: Sequence[str], targets: List[int], words: Optional[Dict[str, Tuple[str, ...]]] = None
) -> DatasetSpec:
    """A COCO-Stuff-164k variant: fine train id k -> ``targets[k]`` (or IGNORE)."""
    pairs = dict(enumerate(targets))
    pairs[STORED_IGNORE] = IGNORE
    mapping = LabelMapping.from_pairs(pairs, f"0..{len(COCO_STUFF_CLASSES) - 1} or {STORED_IGNORE} (ignore)")
    return DatasetSpec(
        name,
        tuple(categories),
        mapping,
        "images/val2017",
        "annotations/val2017",
        "_labelTrainIds",
        ("coco_stuff164k",),
        words,
    )


def _unseen_targets() -> List[int]:
    index = {name: i for i, name in enumerate(COCO_UNSEEN_15)}
    return [index.get(name, IGNORE) for name in COCO_STUFF_CLASSES]


def get_dataset(name: str) -> DatasetSpec:
    """The spec of a built-in dataset (``ade20k``, ``coco-stuff``, ``coco-stuff-27``, ``coco-stuff-unseen15``)."""
    if name == "ade20k":
        mapping = LabelMapping.reduce_zero_label(len(ADE20K_CLASSES), [STORED_IGNORE])
        return DatasetSpec(
            name,
            ADE20K_CLASSES,
            mapping,
            "images/validation",
            "annotations/validation",
            "",
            ("ADEChallengeData2016",),
            reduce_zero_label=True,
        )
    if name == "coco-stuff":
        return _coco(name, COCO_STUFF_CLASSES, list(range(len(COCO_STUFF_CLASSES))))
    if name == "coco-stuff-27":
        return _coco(name, [c.name for c in COCO_STUFF_27], coarse_of_fine(), coarse_words())
    if name == "coco-stuff-unseen15":
        return _coco(name, COCO_UNSEEN_15, _unseen_targets())
    raise IFSegError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")


def _files(folder: str, ends: Tuple[str, ...]) -> List[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(ends) and not f.startswith("."))


def dataset_root(spec: DatasetSpec, root: str) -> str:
    """``root`` itself or the accepted wrapping folder inside it that holds the split."""
    if not os.path.isdir(root):
        raise IFSegError(f"dataset folder not found: {root}")
    for base in [root] + [os.path.join(root, p) for p in spec.parents]:
        if os.path.isdir(os.path.join(base, spec.image_dir)) and os.path.isdir(os.path.join(base, spec.label_dir)):
            return base
    raise IFSegError(f"{root} is not a {spec.name} folder: expected {spec.image_dir}/ and {spec.label_dir}/ inside it")


def find_samples(spec: DatasetSpec, root: str) -> List[Sample]:
    """Image/label pairs of the validation split, sorted by file name; any unpaired file is an error."""
    base = dataset_root(spec, root)
    image_dir, label_dir = os.path.join(base, spec.image_dir), os.path.join(base, spec.label_dir)
    suffix = spec.label_suffix + ".png"
    labels = {f[: -len(suffix)]: f for f in _files(label_dir, (suffix.lower(),)) if f.endswith(suffix)}
    images: Dict[str, str] = {}
    for f in _files(image_dir, IMAGE_EXTS):
        key = os.path.splitext(f)[0]
        if key in images:
            raise IFSegError(f"{image_dir} holds two images named {key}.*; keep one")
        images[key] = f
    if not labels:
        raise IFSegError(f"no label maps (*{suffix}) in {label_dir}")
    missing = sorted(set(labels) - set(images))
    if missing:
        raise IFSegError(
            f"{len(missing)} label map(s) have no image in {image_dir} (e.g. {labels[missing[0]]}); image and label "
            f"folders must match"
        )
    extra = sorted(set(images) - set(labels))
    if extra:
        raise IFSegError(
            f"{len(extra)} image(s) have no label map in {label_dir} (e.g. {images[extra[0]]}); image and label "
            f"folders must match"
        )
    return [Sample(k, os.path.join(image_dir, images[k]), os.path.join(label_dir, labels[k])) for k in sorted(labels)]
