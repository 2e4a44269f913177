"""Class lists of the evaluation datasets (data only, plus the derived label mappings).

* ADE20K: the 150 classes in mmsegmentation's order, spelled as IFSeg prompts them
  (``run_scripts/IFSeg/ade.sh``).
* COCO-Stuff-164k: the 171 classes of the ``*_labelTrainIds.png`` maps in mmsegmentation's
  order, spelled as IFSeg prompts them (``coco_fine.sh``: "building-other" -> "building",
  "wall-concrete" -> "concrete wall", ...).
* COCO-Stuff 27: the coarse classes of the COCO-Stuff hierarchy (the 12 thing super-categories,
  then the 15 stuff super-categories) in the order of the unsupervised-segmentation benchmark.
  Each has the fine classes it merges (which derives the coarse ground truth from the fine
  labels) and the words that describe it to the model (IFSeg paper, table 15): its class
  embedding is the mean over those words of each word's mean token embedding.
* COCO-Stuff unseen 15: the classes of IFSeg's unseen split (``coco_unseen.sh``); every other
  fine class is ignored, as in ``convert_segmentation_coco_unseen_split.ipynb``.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Tuple

ADE20K_CLASSES: Tuple[str, ...] = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass',
    'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain',
    'chair', 'car', 'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field',
    'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp', 'bathtub', 'railing',
    'cushion', 'base', 'box', 'column', 'signboard', 'chest of drawers', 'counter', 'sand', 'sink',
    'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs', 'runway', 'case',
    'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge', 'bookcase', 'blind',
    'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove', 'palm',
    'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
    'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth',
    'television receiver', 'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister',
    'escalator', 'ottoman', 'bottle', 'buffet', 'poster', 'stage', 'van', 'ship', 'fountain',
    'conveyer belt', 'canopy', 'washer', 'plaything', 'swimming pool', 'stool', 'barrel', 'basket',
    'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank',
    'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen',
    'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan',
    'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass',
    'clock', 'flag',
)

COCO_STUFF_CLASSES: Tuple[str, ...] = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone',
    'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
    'teddy bear', 'hair drier', 'toothbrush', 'banner', 'blanket', 'branch', 'bridge', 'building',
    'bush', 'cabinet', 'cage', 'cardboard', 'carpet', 'ceiling', 'ceiling tile', 'cloth',
    'clothes', 'clouds', 'counter', 'cupboard', 'curtain', 'desk', 'dirt', 'door', 'fence',
    'marble floor', 'other floor', 'stone floor', 'tile floor', 'wood floor', 'flower', 'fog',
    'food', 'fruit', 'furniture', 'grass', 'gravel', 'ground', 'hill', 'house', 'leaves', 'light',
    'mat', 'metal', 'mirror', 'moss', 'mountain', 'mud', 'napkin', 'net', 'paper', 'pavement',
    'pillow', 'plant', 'plastic', 'platform', 'playingfield', 'railing', 'railroad', 'river',
    'road', 'rock', 'roof', 'rug', 'salad', 'sand', 'sea', 'shelf', 'sky', 'skyscraper', 'snow',
    'solid', 'stairs', 'stone', 'straw', 'structural', 'table', 'tent', 'textile', 'towel', 'tree',
    'vegetable', 'brick wall', 'concrete wall', 'other wall', 'panel wall', 'stone wall',
    'tile wall', 'wood wall', 'water', 'waterdrops', 'blind window', 'other window', 'wood',
)


class CoarseClass(NamedTuple):
    """One class of COCO-Stuff 27."""

    name: str  # the category name used in the prompt and the report
    fine: Tuple[str, ...]  # the COCO_STUFF_CLASSES it merges
    words: Tuple[str, ...]  # the words whose embeddings define it (paper table 15)


COCO_STUFF_27: Tuple[CoarseClass, ...] = (
    CoarseClass("electronic", ("tv", "laptop", "mouse", "remote", "keyboard", "cell phone"),
                ("electronic", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone")),
    CoarseClass("appliance", ("microwave", "oven", "toaster", "sink", "refrigerator"),
                ("appliance", "microwave", "oven", "toaster", "sink", "refrigerator", "blender")),
    CoarseClass("food-things", ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake"),
                ("food", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake")),
    CoarseClass("furniture-things", ("chair", "couch", "potted plant", "bed", "dining table", "toilet"),
                ("furniture", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk", "toilet", "door")),
    CoarseClass("indoor", ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"),
                ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush")),
    CoarseClass("kitchen", ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"),
                ("kitchen", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl")),
    CoarseClass("accessory", ("backpack", "umbrella", "handbag", "tie", "suitcase"),
                ("accessory", "hat", "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase")),
    CoarseClass("animal", ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
                ("animal", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")),
    CoarseClass("outdoor", ("traffic light", "fire hydrant", "stop sign", "parking meter", "bench"),
                ("traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench")),
    CoarseClass("person", ("person",), ("person", "man", "woman", "child", "boy", "girl")),
    CoarseClass("sports", ("frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
                           "surfboard", "tennis racket"),
                ("sports", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
                 "surfboard", "tennis racket")),
    CoarseClass("vehicle", ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"),
                ("vehicle", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat")),
    CoarseClass("ceiling", ("ceiling", "ceiling tile"), ("ceiling", "ceiling tile")),
    CoarseClass("floor", ("carpet", "marble floor", "other floor", "stone floor", "tile floor", "wood floor"),
                ("floor", "carpet", "marble flooring", "stone flooring", "tile flooring", "wood flooring")),
    CoarseClass("food-stuff", ("food", "fruit", "salad", "vegetable"), ("food", "fruit", "salad", "vegetable")),
    CoarseClass("furniture-stuff", ("cabinet", "counter", "cupboard", "desk", "door", "furniture", "light", "mirror", "shelf", "stairs",
                                    "table"),
                ("furniture", "cabinet", "counter", "cupboard", "desk", "door", "light", "mirror", "shelf", "stairs", "table")),
    CoarseClass("raw material", ("cardboard", "metal", "paper", "plastic"), ("cardboard", "metal", "paper", "plastic")),
    CoarseClass("textile", ("banner", "blanket", "cloth", "clothes", "curtain", "mat", "napkin", "pillow", "rug", "textile", "towel"),
                ("textile", "banner", "blanket", "cloth", "clothes", "curtain", "mat", "napkin", "pillow", "rug", "towel")),
    CoarseClass("wall", ("brick wall", "concrete wall", "other wall", "panel wall", "stone wall", "tile wall", "wood wall"),
                ("wall", "brick wall", "concrete wall", "panel wall", "stone wall", "tile wall", "wood wall")),
    CoarseClass("window", ("blind window", "other window"), ("window", "blind window")),
    CoarseClass("building", ("bridge", "building", "house", "roof", "skyscraper", "tent"),
                ("building", "bridge", "house", "roof", "skyscraper", "tent")),
    CoarseClass("ground", ("dirt", "gravel", "ground", "mud", "pavement", "platform", "playingfield", "railroad", "road", "sand", "snow"),
                ("ground", "dirt", "gravel", "mud", "pavement", "platform", "playingfield", "railroad", "road", "sand", "snow")),
    CoarseClass("plant", ("branch", "bush", "flower", "grass", "leaves", "moss", "plant", "straw", "tree"),
                ("plant", "branch", "bush", "flower", "grass", "leaves", "moss", "straw", "tree")),
    CoarseClass("sky", ("clouds", "sky"), ("sky", "clouds")),
    CoarseClass("solid", ("hill", "mountain", "rock", "solid", "stone", "wood"), ("hill", "mountain", "rock", "stone", "wood")),
    CoarseClass("structural", ("cage", "fence", "net", "railing", "structural"), ("structural", "cage", "fence", "net", "railing")),
    CoarseClass("water", ("fog", "river", "sea", "water", "waterdrops"), ("water", "fog", "river", "sea", "ocean", "waterdrops", "lake")),
)

COCO_UNSEEN_15: Tuple[str, ...] = (
    "frisbee", "skateboard", "cardboard", "carrot", "scissors", "suitcase", "giraffe", "cow",
    "road", "concrete wall", "tree", "grass", "river", "clouds", "playingfield",
)


def coarse_of_fine() -> List[int]:
    """COCO-Stuff 27 class index of each of the 171 fine classes."""
    index = {name: i for i, name in enumerate(COCO_STUFF_CLASSES)}
    out = [-1] * len(COCO_STUFF_CLASSES)
    for c, coarse in enumerate(COCO_STUFF_27):
        for name in coarse.fine:
            out[index[name]] = c
    return out


def coarse_words() -> Dict[str, Tuple[str, ...]]:
    """Category name -> the words of its class embedding, for COCO-Stuff 27."""
    return {c.name: c.words for c in COCO_STUFF_27}
