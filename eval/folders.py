"""FID / KID between any two image folders (`spade-bench eval --real DIR --fake DIR`), as
pytorch-fid does, with the same network, protocols and protocol record as the run harness.

Images are listed non-recursively and sorted by name. Within a folder, images whose size
differs from the folder's first image are resized to it (bicubic, antialiased) with a
warning that says how many; each folder is then resized to 299x299 by the FID protocol.

Two folders at different sizes are refused: the same photos at 256 and at 128 pixels are
40 FID apart. With `resize_to` (`--resize-to HxW`) both folders are resized to that size
first (bicubic, antialiased), and the record says so.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Optional

import torch

from eval.fid import FeatureExtractor
from eval.images import IMAGE_EXTENSIONS, list_images, load_image, resize_uint8
from eval.protocol import build_protocol
from spade_bench.errors import EvalError
from spade_bench.metrics import Batch, Context, get_metric, resolve_request


class FolderImages:
    """The images of one folder, in uint8 batches at one size.

    Args:
        folder: the image folder.
        batch_size: images per batch.
        resize_to: (H, W) every image is resized to; None keeps the first image's size.
    """

    def __init__(self, folder: str | Path, batch_size: int = 16, resize_to: Optional[tuple[int, int]] = None):
        self.folder = Path(folder)
        self.paths = list_images(self.folder)
        if not self.paths:
            raise EvalError(f"no images in {self.folder} (looked for {', '.join(IMAGE_EXTENSIONS)} files "
                            f"directly inside it); pass a folder that holds the images themselves")
        self.batch_size = batch_size
        self.stored_hw = tuple(load_image(self.paths[0]).shape[-2:])
        self.size_hw = tuple(resize_to) if resize_to else self.stored_hw
        self.resize_to = resize_to
        self.resized: list[Path] = []

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.paths), self.batch_size):
            images = []
            for path in self.paths[start:start + self.batch_size]:
                image = load_image(path)
                if tuple(image.shape[-2:]) != self.size_hw:
                    if tuple(image.shape[-2:]) != self.stored_hw:
                        self.resized.append(path)
                    image = resize_uint8(image[None], self.size_hw, "bicubic")[0]
                images.append(image)
            yield torch.stack(images)

    def resize_warning(self) -> Optional[str]:
        if not self.resized:
            return None
        height, width = self.stored_hw
        target = "it" if self.resize_to is None else f"{self.size_hw[0]}x{self.size_hw[1]} (--resize-to)"
        return (f"{len(self.resized)} of {len(self.paths)} images in {self.folder} are not "
                f"{height}x{width} like the first one (e.g. {self.resized[0].name}); "
                f"they were resized to {target} (bicubic) before the FID protocol's resize to 299x299")


def parse_size(text: str) -> tuple[int, int]:
    """'256x512' (height x width) -> (256, 512); an EvalError naming the value otherwise."""
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        raise EvalError(f"--resize-to {text!r} is not a size; write HEIGHTxWIDTH, e.g. --resize-to 256x256")
    return height, width


def compare_folders(real_dir: str | Path, fake_dir: str | Path, *, metric: str = "fid",
                    protocol: str = "pytorch-fid", device: str | torch.device = "cpu", batch_size: int = 16,
                    kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
                    resize_to: Optional[tuple[int, int]] = None) -> dict[str, Any]:
    """FID and/or KID of `fake_dir` against `real_dir`; returns scores, counts, warnings and protocol.

    Folders whose first images differ in size are refused unless `resize_to` (H, W) is given.
    """
    # Folders have no label maps: only the metrics computed from image features apply.
    names = resolve_request(metric, inputs="features")
    start = time.perf_counter()
    real = FolderImages(real_dir, batch_size, resize_to)
    fake = FolderImages(fake_dir, batch_size, resize_to)
    for images in (real, fake):
        if len(images) < 2:
            raise EvalError(f"{images.folder} has {len(images)} image; FID and KID need at least 2 per folder")
    if real.size_hw != fake.size_hw:
        (rh, rw), (fh, fw) = real.size_hw, fake.size_hw
        raise EvalError(f"the folders hold images of different sizes: {real.folder} is {rh}x{rw}, {fake.folder} is "
                        f"{fh}x{fw}; FID and KID depend on the resolution, so compare them at one size: "
                        f"--resize-to {min(rh, fh)}x{min(rw, fw)} resizes both (bicubic)")
    extractor = FeatureExtractor(protocol, device, batch_size)
    real_features = extractor.extract(real.batches(), total=len(real), desc="FID features (real)")
    fake_features = extractor.extract(fake.batches(), total=len(fake), desc="FID features (fake)")
    messages = [m for m in (real.resize_warning(), fake.resize_warning()) if m]
    settings = SimpleNamespace(kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed)
    scores: dict[str, Optional[float]] = {}
    protocol_values: dict[str, Any] = {"kid_subsets": kid_subsets, "kid_subset_size": None}
    for name in resolve_request("all", inputs="features"):
        metric = get_metric(name)
        scores.update({key: None for key in (name, *metric.extras)})
        if name not in names:
            continue
        instance = metric.from_settings(settings)
        instance.update(Batch(fake_features=fake_features))
        score = instance.compute(Context(real_features=real_features))
        scores[name] = score.value
        scores.update(score.extras)
        protocol_values.update(score.protocol)
        messages += [w for w in score.warnings if w not in messages]
    for message in messages:
        warnings.warn(message)
    record = build_protocol(
        num_images=len(fake), generation_size=None, eval_size=[list(real.size_hw), list(fake.size_hw)],
        image_resize=_resize_record(real, fake, resize_to),
        label_resize=None, fid_protocol=protocol, fid_extractor_sha256=extractor.weights_sha256,
        segmenter=None, segmenter_sha256=None, seeds={"kid_subsets": seed},
        wall_time_s=time.perf_counter() - start, num_real_images=len(real), metrics=names, **protocol_values,
    )
    return {"metrics": scores, "real": str(real.folder), "fake": str(fake.folder), "warnings": messages,
            "protocol": record}


def _resize_record(real: FolderImages, fake: FolderImages, resize_to: Optional[tuple[int, int]]) -> str:
    if resize_to is not None:
        return f"bicubic (antialiased) to {resize_to[0]}x{resize_to[1]} (--resize-to)"
    return "none" if not (real.resized or fake.resized) else "bicubic to each folder's first image size"
