"""Class lists of the evaluation datasets (data only, plus the derived label mappings).

* ADE20K: the 150 classes in mmsegmentation's order, spelled as IFSeg prompts them
  (``run_scripts/IFSeg/ade.sh``).
* COCO-Stuff-164k: the 171 classes of the ``*_labelTrainIds.png`` maps in mmsegmentation's
  order, spelled as IFSeg prompts them (``coco_fine.sh``: "building-other" -> "building",
  "wall-concrete" -> "concrete wall", ...).
* COCO-Stuff 27: the coarse classes of the COCO-Stuff hierarchy (the 12 thing super-categories,
  then the 15 stuff super-categories) in the order of the unsupervised-segmentation benchmark.
  Each has the fine classes it merges (which derives the coarse ground truth from the fine
  labels) and, separately, the words that describe it to the model: exactly the words of the
  IFSeg paper's supplementary table 15, in the table's order and spelling ("skits",
  "skyscrapper"; "mirror", "desk" and "door" under two classes; the coarse name itself is not
  a word). Its class embedding is the mean over those words of each word's mean token
  embedding. The same table ships as the categories file ``coco-stuff-27``
  (``ifseg_deploy/data/coco_stuff_27.txt``); the names here are the benchmark's
  ("food-things" for the table's "food (things)").
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
                ("cell phone", "keyboard", "remote", "mouse", "laptop", "tv")),
    CoarseClass("appliance", ("microwave", "oven", "toaster", "sink", "refrigerator"),
                ("blender", "refrigerator", "sink", "toaster", "oven", "microwave")),
    CoarseClass("food-things", ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
                                "cake"),
                ("cake", "donut", "pizza", "hot dog", "carrot", "broccoli", "orange", "sandwich", "apple", "banana")),
    CoarseClass("furniture-things", ("chair", "couch", "potted plant", "bed", "dining table", "toilet"),
                ("door", "toilet", "desk", "window", "dining table", "mirror", "bed", "potted plant", "couch", "chair")),
    CoarseClass("indoor", ("book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"),
                ("hair brush", "toothbrush", "hair drier", "teddy bear", "scissors", "vase", "clock", "book")),
    CoarseClass("kitchen", ("bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"),
                ("bowl", "spoon", "knife", "fork", "cup", "wine glass", "plate", "bottle")),
    CoarseClass("accessory", ("backpack", "umbrella", "handbag", "tie", "suitcase"),
                ("suitcase", "tie", "handbag", "eye glasses", "shoe", "umbrella", "backpack", "hat")),
    CoarseClass("animal", ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
                ("giraffe", "zebra", "bear", "elephant", "cow", "sheep", "horse", "dog", "cat", "bird")),
    CoarseClass("outdoor", ("traffic light", "fire hydrant", "stop sign", "parking meter", "bench"),
                ("bench", "parking meter", "stop sign", "street sign", "fire hydrant", "traffic light")),
    CoarseClass("person", ("person",), ("man", "woman", "child", "boy", "girl")),
    CoarseClass("sports", ("frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
                           "surfboard", "tennis racket"),
                ("tennis racket", "surfboard", "skateboard", "baseball glove", "baseball bat", "kite", "sports ball", "snowboard",
                 "skits", "frisbee")),
    CoarseClass("vehicle", ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"),
                ("boat", "truck", "train", "bus", "airplane", "motorcycle", "car", "bicycle")),
    CoarseClass("ceiling", ("ceiling", "ceiling tile"), ("tile ceiling",)),
    CoarseClass("floor", ("carpet", "marble floor", "other floor", "stone floor", "tile floor", "wood floor"),
                ("stone floor", "marble floor", "wood floor", "tile floor", "carpet")),
    CoarseClass("food-stuff", ("food", "fruit", "salad", "vegetable"), ("vegetable", "salad", "fruit")),
    CoarseClass("furniture-stuff", ("cabinet", "counter", "cupboard", "desk", "door", "furniture", "light", "mirror", "shelf",
                                    "stairs", "table"),
                ("stairs", "light", "counter", "mirror", "cupboard", "cabinet", "shelf", "table", "desk", "door")),
    CoarseClass("raw material", ("cardboard", "metal", "paper", "plastic"), ("metal", "plastic", "paper", "cardboard")),
    CoarseClass("textile", ("banner", "blanket", "cloth", "clothes", "curtain", "mat", "napkin", "pillow", "rug", "textile",
                            "towel"),
                ("banner", "pillow", "blanket", "curtain", "cloth", "clothes", "napkin", "towel", "mat", "rug")),
    CoarseClass("wall", ("brick wall", "concrete wall", "other wall", "panel wall", "stone wall", "tile wall", "wood wall"),
                ("concrete wall", "stone wall", "brick wall", "wood wall", "panel wall", "tile wall")),
    CoarseClass("window", ("blind window", "other window"), ("blind window",)),
    CoarseClass("building", ("bridge", "building", "house", "roof", "skyscraper", "tent"),
                ("roof", "tent", "bridge", "skyscrapper", "house")),
    CoarseClass("ground", ("dirt", "gravel", "ground", "mud", "pavement", "platform", "playingfield", "railroad", "road", "sand",
                           "snow"),
                ("playingfield", "platform", "railroad", "pavement", "road", "gravel", "mud", "dirt", "snow", "sand")),
    CoarseClass("plant", ("branch", "bush", "flower", "grass", "leaves", "moss", "plant", "straw", "tree"),
                ("straw", "moss", "branch", "flower", "leaves", "bush", "tree", "grass")),
    CoarseClass("sky", ("clouds", "sky"), ("clouds",)),
    CoarseClass("solid", ("hill", "mountain", "rock", "solid", "stone", "wood"), ("hill", "mountain", "stone", "rock", "wood")),
    CoarseClass("structural", ("cage", "fence", "net", "railing", "structural"), ("railing", "net", "cage", "fence")),
    CoarseClass("water", ("fog", "river", "sea", "water", "waterdrops"), ("waterdrops", "sea", "river", "fog", "lake", "ocean")),
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
