"""cityscapes: ROOT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png with
ROOT/gtFine/{train,val}/<city>/*_gtFine_labelIds.png and *_gtFine_instanceIds.png; test photos
in ROOT/leftImg8bit/test/. 35 label ids (0..33 and the licence plate), trained at 512x256 with
one more upsampling layer (REFERENCE.md section 4)."""
from __future__ import annotations

from pathlib import Path

from spade_bench.data.formats._base import DatasetFormat, Pair, files_by_key, only


def list_pairs(root: Path, split: str, data_cfg) -> list[Pair]:
    images = files_by_key(root / "leftImg8bit" / split, (".png",), True, strip="_leftImg8bit")
    gt = root / "gtFine" / split
    labels = files_by_key(gt, (".png",), True, strip="_gtFine_labelIds")
    labels = {k: v for k, v in labels.items() if v[0].name.endswith("_gtFine_labelIds.png")}
    instances = files_by_key(gt, (".png",), True, strip="_gtFine_instanceIds") if data_cfg.use_instance else {}
    instances = {k: v for k, v in instances.items() if v[0].name.endswith("_gtFine_instanceIds.png")}
    images = {k: v for k, v in images.items() if v[0].name.endswith("_leftImg8bit.png")}
    return [Pair(key, only(images.get(key), "image"), only(labels.get(key), "label"),
                 only(instances.get(key), "instance"))
            for key in sorted(set(images) | set(labels))]


FORMAT = DatasetFormat(
    name="cityscapes",
    description="Cityscapes: ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png, ROOT/gtFine/SPLIT/CITY/*_gtFine_*.png",
    data_defaults=dict(label_nc=35, contain_dontcare=False, use_instance=True,
                       preprocess="fixed", load_size=512, crop_size=512, aspect_ratio=2.0),
    generator_defaults=dict(num_upsampling_layers="more"),
    list_pairs=list_pairs,
    # Label ids 0..33 and the license plate (-1 in cityscapesScripts; index 34 here).
    class_names=(
        "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground",
        "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge",
        "tunnel", "pole", "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky",
        "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
        "license plate",
    ),
    # Colours by label id 0..33, then the license plate (the original SPADE order). The original's
    # colour map (data/palette.py `label_colormap`) draws any 35-class dataset in these colours.
    palette=(
        (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81),
        (128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156),
        (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100),
        (0, 0, 230), (119, 11, 32), (0, 0, 142),
    ),
    test_photos=("leftImg8bit", "test"),
)
