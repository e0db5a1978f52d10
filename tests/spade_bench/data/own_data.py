"""A fabricated "own data" set like the street dataset issue 11 tried: 480x360 photos, 11
classes (label values 0..10) plus a void value 11, in the `folder` layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LABEL_NC, VOID = 11, 11


def make_folder_dataset(root: Path, *, n_train: int = 4, n_val: int = 2, size: tuple[int, int] = (480, 360),
                        splits: bool = True, seed: int = 0) -> Path:
    """root/{train,val}/{images,labels}/ (or a flat root/{images,labels}/ with splits=False).

    Each label map has horizontal bands of every class 0..10 and a void (11) block; the photo
    paints each class its own colour with a little noise. Returns root.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    colours = rng.integers(0, 256, size=(LABEL_NC + 1, 3))
    for split, count in (("train", n_train), ("val", n_val)):
        base = root / split if splits else root
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            band = np.arange(height)[:, None] * LABEL_NC // height
            label = np.broadcast_to((band + i) % LABEL_NC, (height, width)).astype(np.uint8).copy()
            label[: height // 6, : width // 5] = VOID
            photo = colours[label] + rng.integers(-12, 13, size=(height, width, 3))
            name = f"{split}_{i:03d}"
            Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(base / "images" / f"{name}.jpg", quality=90)
            Image.fromarray(label).save(base / "labels" / f"{name}.png")
        if not splits:
            break
    return root
