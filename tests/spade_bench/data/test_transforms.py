"""Paired transforms: labels are resized with nearest only (no new values), and image, label
and instance share one crop and flip."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from spade_bench.config import DataConfig
from spade_bench.data import build_dataset
from spade_bench.data.transforms import (TransformParams, image_to_tensor, resize_nearest, transform_image,
                                         transform_map, transform_params)


def test_resize_nearest_matches_pil_pixel_for_pixel():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w, out_h, out_w = (int(v) for v in rng.integers(3, 300, 4))
        label = rng.integers(0, 256, (h, w)).astype(np.uint8)
        expected = np.asarray(Image.fromarray(label).resize((out_w, out_h), Image.NEAREST))
        assert np.array_equal(resize_nearest(label, (out_h, out_w)), expected)


@pytest.mark.parametrize("preprocess", ["resize_and_crop", "fixed", "none"])
@pytest.mark.parametrize("augment", [True, False])
def test_label_values_after_transform_are_a_subset(preprocess, augment):
    rng = np.random.default_rng(1)
    # Blocky labels with many classes, plus an instance map with large ids.
    label = np.kron(rng.integers(0, 40, (13, 9)), np.ones((7, 11), dtype=np.int64))
    instance = (label * 1000 + 7).astype(np.int32)
    cfg = replace(DataConfig(), preprocess=preprocess, load_size=80, crop_size=64)
    torch.manual_seed(0)
    params = transform_params(cfg, label.shape, augment)
    out_label, out_instance = transform_map(label, params), transform_map(instance, params)
    assert set(np.unique(out_label)) <= set(np.unique(label))
    assert set(np.unique(out_instance)) <= set(np.unique(instance))
    assert np.array_equal(out_instance, (out_label * 1000 + 7).astype(np.int32))
    if preprocess != "none":
        assert out_label.shape == cfg.image_size


def test_val_resizes_to_image_size_without_crop_or_flip():
    cfg = replace(DataConfig(), preprocess="resize_and_crop", load_size=286, crop_size=128, aspect_ratio=2.0)
    for _ in range(5):
        params = transform_params(cfg, (300, 500), augment=False)
        assert params == TransformParams(resize=(64, 128), crop=None, flip=False)


def test_train_crop_and_flip_are_shared_by_image_and_label():
    cfg = replace(DataConfig(), preprocess="resize_and_crop", load_size=48, crop_size=32)
    rng = np.random.default_rng(2)
    label = rng.integers(0, 10, (48, 48))
    image = np.repeat((label * 25).astype(np.uint8)[..., None], 3, axis=2)   # the image encodes the label
    flips, corners = set(), set()
    torch.manual_seed(3)
    for _ in range(30):
        params = transform_params(cfg, (48, 48), augment=True)
        assert params.resize is None                                     # stored size is the load size
        flips.add(params.flip)
        corners.add(params.crop[:2])
        out_image = transform_image(image, params)
        out_label = transform_map(label, params)
        assert out_image.shape == (32, 32, 3)
        assert np.array_equal(out_image[..., 0], (out_label * 25).astype(np.uint8))
    assert flips == {True, False} and len(corners) > 5


def test_flip_off_in_config():
    cfg = replace(DataConfig(), flip=False, preprocess="fixed")
    torch.manual_seed(0)
    assert not any(transform_params(cfg, (10, 10), augment=True).flip for _ in range(20))


def test_image_resize_modes_and_tensor_range():
    image = np.random.default_rng(3).integers(0, 256, (40, 60, 3)).astype(np.uint8)
    params = TransformParams(resize=(20, 30), crop=None, flip=False)
    bicubic = transform_image(image, params, "bicubic")
    bilinear = transform_image(image, params, "bilinear")
    assert bicubic.shape == bilinear.shape == (20, 30, 3) and not np.array_equal(bicubic, bilinear)
    tensor = image_to_tensor(np.array([[[0, 255, 127]]], dtype=np.uint8))
    assert tensor.shape == (3, 1, 1)
    assert torch.allclose(tensor.flatten(), torch.tensor([-1.0, 1.0, 127 / 127.5 - 1]))


def test_dataset_labels_keep_their_values(facades_root):
    cfg = replace(DataConfig(dataset="facades", root=str(facades_root), label_nc=13), load_size=143, crop_size=128)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    from spade_bench.data.files import load_label_array
    for dataset in (train, val):
        for index in (0, 1):
            pair = dataset.pairs[index]
            before = set(np.unique(load_label_array(pair.label, cfg)))
            after = set(np.unique(dataset[index]["label"].numpy()))
            assert after <= before
