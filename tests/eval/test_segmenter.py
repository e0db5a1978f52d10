"""The segmentation evaluator: ImageNet encoder weights, a tiny trained evaluator, user
TorchScript segmenters with their sidecar, and clear errors."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from eval.segmenter import (DefaultSegmenter, build_segmentation_network, default_segmenter_path,
                            efficientnet_lite0_imagenet_state_dict, efficientnet_lite0_weights_path,
                            load_segmenter, segmenter_train_command)
from spade_bench.errors import EvalError


def test_imagenet_encoder_weights_load_strictly_into_smp_encoder():
    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    renamed = efficientnet_lite0_imagenet_state_dict()  # strict load into full timm inside
    assert len(renamed) == len(source)
    network = build_segmentation_network(13, "unet")
    encoder_state = network.encoder.model.state_dict()
    assert torch.equal(encoder_state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(encoder_state["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(encoder_state["blocks.0.0.bn1.running_var"], source["_blocks.0._bn1.running_var"])
    # Exactly the head is left out of the features-only encoder.
    assert set(renamed) - set(encoder_state) == {
        "conv_head.weight", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var",
        "bn2.num_batches_tracked", "classifier.weight", "classifier.bias"}


class ThresholdRed(nn.Module):
    """Their class 0 where the normalised red channel is > 0, class 1 elsewhere; class 2 never."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, :1]
        return torch.cat([red, torch.zeros_like(red), torch.full_like(red, -10.0)], 1)


def _script(tmp_path, sidecar: dict):
    path = tmp_path / "user_segmenter.pt"
    torch.jit.script(ThresholdRed()).save(str(path))
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def test_torchscript_segmenter_normalises_resizes_and_maps_labels(tmp_path):
    path = _script(tmp_path, {"name": "threshold-red", "input_size": [8, 8], "mean": [0.5, 0.5, 0.5],
                              "std": [0.5, 0.5, 0.5], "output": "logits", "label_map": {"0": 3, "2": 0}})
    segmenter = load_segmenter(path, num_classes=4)
    assert segmenter.name == "threshold-red" and len(segmenter.sha256) == 64
    images = torch.full((1, 3, 16, 16), -1.0)
    images[:, 0, :, :8] = 0.2   # red 0.6 in [0, 1]: above the sidecar mean of 0.5 -> their class 0
    images[:, 0, :, 8:] = -0.2  # red 0.4: below the mean -> their class 1, which maps to none of ours
    labels = segmenter.predict(images)
    assert labels.shape == (1, 16, 16)
    assert (labels[:, :, :8] == 3).all()
    assert (labels[:, :, 8:] == -1).all()


def test_torchscript_segmenter_without_normalisation_differs(tmp_path):
    # With mean 0 / std 1 both halves have red > 0, so both become their class 0: the
    # sidecar's normalisation is what separates them in the test above.
    path = _script(tmp_path, {"name": "threshold-red", "label_map": {"0": 1, "1": 0}})
    images = torch.full((1, 3, 4, 4), -1.0)
    images[:, 0] = -0.2
    assert (load_segmenter(path, num_classes=2).predict(images) == 1).all()


def test_sidecar_errors_are_clear(tmp_path):
    path = _script(tmp_path, {"name": "x", "input_sise": [8, 8]})
    with pytest.raises(EvalError, match="unknown keys"):
        load_segmenter(path, num_classes=2)
    path.with_suffix(".json").write_text(json.dumps({"num_classes": 5}))
    with pytest.raises(EvalError, match="num_classes=5"):
        load_segmenter(path, num_classes=2)


def test_missing_or_foreign_checkpoint_is_an_eval_error(tmp_path):
    with pytest.raises(EvalError, match="spade-bench segmenter train"):
        load_segmenter(tmp_path / "nope.pt", num_classes=3)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(EvalError, match="not a spade-bench segmenter"):
        load_segmenter(foreign, num_classes=3)


def test_default_path_is_keyed_by_dataset_size_and_root(tmp_path):
    from spade_bench.config import resolve

    cfg = resolve("spade", preset="smoke")
    path = default_segmenter_path(cfg.data)
    assert path.name == "synthetic_64x64_root-none_train-400.pt"
    other = replace(cfg.data, dataset="facades", root=str(tmp_path), crop_size=128, load_size=143)
    assert default_segmenter_path(other).name.startswith("facades_128x128_root-")
    assert default_segmenter_path(other) != default_segmenter_path(replace(other, root=str(tmp_path / "b")))
    # An evaluator trained on another held-out split has seen this split's val photos.
    assert default_segmenter_path(replace(other, split_seed=0)) != default_segmenter_path(replace(other, split_seed=1))
    assert default_segmenter_path(replace(other, split_seed=0)) != default_segmenter_path(other)
    # So has one trained on another fraction of a flat folder.
    flat = replace(other, dataset="folder")
    assert default_segmenter_path(replace(flat, val_fraction=0.1)) != default_segmenter_path(replace(flat, val_fraction=0.2))
    command = segmenter_train_command(resolve("spade", preset="smoke", overrides=["data.crop_size=128",
                                                                                  "data.load_size=143"]))
    assert command.startswith("spade-bench segmenter train --dataset synthetic --preset smoke")
    assert "--set data.crop_size=128" in command


def test_default_segmenter_resizes_to_its_training_size():
    network = build_segmentation_network(3, "unet", imagenet_encoder=False).eval()
    segmenter = DefaultSegmenter(network, (64, 64), "unet", "0" * 64, 3)
    labels = segmenter.predict(torch.zeros(2, 3, 48, 80))
    assert labels.shape == (2, 48, 80) and labels.dtype == torch.long


@pytest.fixture(scope="module")
def tiny_evaluator(tmp_path_factory):
    from spade_bench.config import resolve
    from eval.segmenter import train_segmenter

    cfg = resolve("spade", preset="smoke", overrides=["data.synthetic_train_size=16", "data.synthetic_val_size=6",
                                                      "data.max_val_images=6", "data.num_workers=0"])
    out = tmp_path_factory.mktemp("segmenter") / "tiny.pt"
    info = train_segmenter(cfg, out, steps=4, batch_size=4, device="cpu", progress=False)
    return cfg, out, info


def test_train_segmenter_saves_hash_and_real_val_ceiling(tiny_evaluator):
    from eval.cache import sha256_file
    from eval.segmenter import evaluate_on_real

    cfg, out, info = tiny_evaluator
    assert info["path"] == str(out) and info["file_sha256"] == sha256_file(out)
    assert info["steps"] == 4 and info["image_size"] == [64, 64] and info["num_val_images"] == 6
    assert 0.0 <= info["real_val_miou"] <= 100.0 and 0.0 <= info["real_val_pixel_accuracy"] <= 100.0
    segmenter = load_segmenter(out, num_classes=cfg.data.label_nc)
    assert isinstance(segmenter, DefaultSegmenter) and segmenter.sha256 == info["sha256"]
    assert segmenter.info["real_val"]["miou"] == pytest.approx(info["real_val_miou"])
    # The stored ceiling is what the saved network scores on the same images.
    again = evaluate_on_real(segmenter, cfg.data, num_images=6, batch_size=3)
    assert again["miou"] == pytest.approx(info["real_val_miou"], abs=1e-6)
    assert again["pixel_accuracy"] == pytest.approx(info["real_val_pixel_accuracy"], abs=1e-6)


def test_evaluator_for_another_class_count_is_refused(tiny_evaluator):
    _, out, _ = tiny_evaluator
    with pytest.raises(EvalError, match="predicts 10 classes"):
        load_segmenter(out, num_classes=13)


def test_changed_checkpoint_is_detected_by_its_recorded_hash(tiny_evaluator, tmp_path):
    _, out, info = tiny_evaluator
    from eval.segmenter import hash_path

    assert hash_path(out).read_text().split()[0] == info["file_sha256"]
    copy = tmp_path / "copy.pt"
    copy.write_bytes(out.read_bytes() + b"\0")
    hash_path(copy).write_text(hash_path(out).read_text())
    with pytest.raises(EvalError, match="does not match the sha256"):
        load_segmenter(copy, num_classes=10)


def test_cached_training_set_crops_and_flips_like_the_pipeline():
    from spade_bench.config import resolve
    from eval.segmenter import CachedTrainingSet

    cfg = resolve("spade", preset="smoke", overrides=["data.load_size=72", "data.synthetic_train_size=2"])
    dataset = CachedTrainingSet(cfg.data, seed=0)
    full_image, full_label = dataset.images[0], dataset.labels[0]
    assert full_image.shape == (3, 72, 72) and full_image.dtype == torch.uint8
    seen_flip = False
    for _ in range(6):
        sample = dataset[0]
        assert sample["image"].shape == (3, 64, 64) and sample["label"].shape == (64, 64)
        image = ((sample["image"] + 1) * 127.5).round().to(torch.uint8)
        matches = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)
                   if torch.equal((full_image.flip(-1) if flip else full_image)[:, top:top + 64, left:left + 64], image)]
        assert matches, "the crop is not a window of the cached image"
        top, left, flip = matches[0]
        label = (full_label.flip(-1) if flip else full_label)[top:top + 64, left:left + 64]
        assert torch.equal(label.long(), sample["label"])  # label cropped and flipped with the image
        seen_flip |= flip
    assert seen_flip  # seeded draws: a flip occurs within these six samples
    assert CachedTrainingSet.fits(cfg.data, 10) and not CachedTrainingSet.fits(cfg.data, 10 ** 7)


def test_identity_is_the_weights_hash_not_the_file_bytes(tiny_evaluator, tmp_path):
    from eval.cache import sha256_file, state_dict_sha256

    _, out, info = tiny_evaluator
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert info["sha256"] == state["weights_sha256"] == state_dict_sha256(state["state_dict"])
    # Re-saved with another training time: other file bytes, the same evaluator.
    state["train_time_s"] += 1.0
    copy = tmp_path / "same_weights.pt"
    torch.save(state, copy)
    assert sha256_file(copy) != info["file_sha256"]
    assert load_segmenter(copy, num_classes=10).sha256 == info["sha256"]


def test_modified_weights_are_refused_naming_the_file_and_the_fix(tiny_evaluator, tmp_path):
    from eval.cache import sha256_file
    from eval.segmenter import hash_path

    _, out, info = tiny_evaluator
    state = torch.load(out, map_location="cpu", weights_only=True)
    key = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][key] = state["state_dict"][key] + 0.5
    tampered = tmp_path / "tampered.pt"
    torch.save(state, tampered)
    # Even with a file-hash sidecar that matches the new bytes, the weights give it away.
    hash_path(tampered).write_text(f"{sha256_file(tampered)}  tampered.pt\n")
    with pytest.raises(EvalError, match=r"tampered\.pt.*do not match the sha256.*segmenter train"):
        load_segmenter(tampered, num_classes=10)


def test_each_evaluator_recipe_has_its_own_cache_file(tmp_path):
    # The README runs the smoke preset, then the cpu preset, in one cache: the cpu sweep must not
    # pick up the smoke preset's 400-step evaluator (trained on 400 scenes) as its 3000-step one.
    from runners.ablate import plan_sweep
    from spade_bench.config import resolve
    from eval.segmenter import run_segmenter_path

    smoke, cpu = resolve("spade", preset="smoke"), resolve("spade", preset="cpu")
    assert run_segmenter_path(smoke) != run_segmenter_path(cpu)
    assert "steps-3000" in run_segmenter_path(cpu).name and "train-4000" in run_segmenter_path(cpu).name
    more_scenes = resolve("spade", preset="smoke", overrides=["data.synthetic_train_size=800"])
    assert run_segmenter_path(more_scenes) != run_segmenter_path(smoke)
    # ablate --segmenter-steps is the evaluator every pair records, trains and looks for.
    sweep = plan_sweep(variants=("spade", "concat"), seeds=(0,), preset="smoke", out=tmp_path / "runs",
                       segmenter_steps=123)
    assert sweep.segmenter_steps == 123 and "steps-123" in sweep.segmenter.name
    assert {c.eval.segmenter_steps for c in sweep.configs.values()} == {123}
    assert all(run_segmenter_path(c) == sweep.segmenter for c in sweep.configs.values())
    # The hint names the steps when they are not the preset's.
    assert "--steps 123" in segmenter_train_command(next(iter(sweep.configs.values())))
    assert "--steps" not in segmenter_train_command(smoke)


def test_upsampled_input_is_part_of_the_recipe_the_checkpoint_and_the_protocol(tmp_path):
    """eval.segmenter_upsample: the evaluator trains and scores on its input upsampled (bilinear),
    logits pooled back to the label size; the checkpoint carries the factor, the cache name and
    the train command name it, and a loaded evaluator scores as it did when trained."""
    from eval.segmenter import evaluate_on_real, network_logits, run_segmenter_path, train_segmenter
    from spade_bench.config import ConfigError, resolve

    network = build_segmentation_network(3, "unet", imagenet_encoder=False).eval()
    images = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        for factor in (1, 2, 4):
            assert network_logits(network, images, factor).shape == (2, 3, 40, 56)
        big = nn.functional.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
        by_hand = nn.functional.avg_pool2d(network(nn.functional.pad(big, (0, 16, 0, 16), mode="replicate"))
                                           [..., :80, :112], 2)
        assert torch.equal(network_logits(network, images, 2), by_hand)
        assert not torch.allclose(network_logits(network, images, 2), network_logits(network, images, 1))

    overrides = ["data.synthetic_train_size=16", "data.synthetic_val_size=6", "data.max_val_images=6",
                 "data.num_workers=0"]
    plain = resolve("spade", preset="smoke", overrides=overrides)
    doubled = resolve("spade", preset="smoke", overrides=overrides + ["eval.segmenter_upsample=2"])
    assert doubled.eval.segmenter_upsample == 2
    assert "up-2" in run_segmenter_path(doubled).name and "up-" not in run_segmenter_path(plain).name
    assert "--set eval.segmenter_upsample=2" in segmenter_train_command(doubled)
    assert "segmenter_upsample" not in segmenter_train_command(plain)
    with pytest.raises(ConfigError, match="segmenter_upsample: 3 is not one of 1, 2, 4"):
        resolve("spade", overrides=["eval.segmenter_upsample=3"])

    info = train_segmenter(doubled, tmp_path / "up2.pt", steps=2, batch_size=4, device="cpu", progress=False)
    assert info["input_upsample"] == 2
    segmenter = load_segmenter(tmp_path / "up2.pt", num_classes=doubled.data.label_nc)
    assert segmenter.upsample == 2 and "input x2" in segmenter.name
    assert "upsampled 2x" in segmenter.describe_input()
    again = evaluate_on_real(segmenter, doubled.data, num_images=6, batch_size=3)
    assert again["miou"] == pytest.approx(info["real_val_miou"], abs=1e-6)
    # Scored without the upsampling, the same weights give other numbers: the factor is used.
    segmenter.upsample = 1
    assert evaluate_on_real(segmenter, doubled.data, num_images=6, batch_size=3)["per_class_iou"] != again["per_class_iou"]
    # A checkpoint from before the key loads as 1.
    state = torch.load(tmp_path / "up2.pt", weights_only=True)
    del state["input_upsample"]
    torch.save(state, tmp_path / "old.pt")
    assert load_segmenter(tmp_path / "old.pt", num_classes=doubled.data.label_nc).upsample == 1
