"""NVlabs checkpoints: import reproduces the original code's own outputs; export round-trips.

The fixture (../shared/fixtures/nvlabs-spade, written by the original NVlabs code) holds two
checkpoint folders and, per folder, one input batch with what the original computed from
it. Outputs are near initialisation (std about 1e-3), so tolerances are absolute.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from spade_bench.checkpoint import latest_path, load_checkpoint, load_generator
from spade_bench.config import load_config_file, resolve, save_config
from spade_bench.data import semantic_input
from spade_bench.data.files import load_instance_array, load_label_array
from spade_bench.discriminators import build_discriminator
from spade_bench.errors import CheckpointError, ConfigError
from spade_bench.nvlabs import (NETWORK_FILES, _load_weights, config_from_options, export_nvlabs, from_nvlabs_keys,
                                import_nvlabs, options_from_config, read_options, to_nvlabs_keys)
from spade_bench.trainer import Trainer, load_saved_config, train_run

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "nvlabs-spade"
TOL = 1e-6


def _fixture(name: str) -> Path:
    folder = FIXTURE / "checkpoints" / name
    if not (folder / "opt.txt").is_file():
        pytest.skip(f"NVlabs fixture not found at {folder}")
    return folder


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """{name: (run_dir, expected)}: both fixture folders imported once (spade through the CLI)."""
    base = tmp_path_factory.mktemp("nvlabs")
    runs = {}
    spade = _fixture("spade")
    result = CliRunner().invoke(app, ["import-nvlabs", str(spade), "--out", str(base / "spade"),
                                      "--dataset", "synthetic"])
    assert result.exit_code == 0, result.output
    runs["spade"] = base / "spade"
    # The fixture's label files write don't-care as 8 (= label_nc).
    import_nvlabs(_fixture("spade-vae"), base / "spade-vae", dataset="synthetic",
                  overrides=["data.dont_care_value=8"])
    runs["spade-vae"] = base / "spade-vae"
    return {name: (run, torch.load(FIXTURE / "inputs" / f"{name}-expected.pt", weights_only=True))
            for name, run in runs.items()}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", ["spade", "spade-vae"])
def test_imported_generator_reproduces_the_originals_outputs(imported, name):
    run, expected = imported[name]
    cfg, generator, encoder, step = load_generator(run)
    assert step == 0
    with torch.no_grad():
        z = None
        if encoder is not None:
            mu, logvar = encoder(expected["real"])
            assert _max_diff(mu, expected["mu"]) <= TOL and _max_diff(logvar, expected["logvar"]) <= TOL
            z = mu
        assert _max_diff(generator(expected["semantics"], z), expected["fake"]) <= TOL
        # One training-mode forward: batch statistics and one power iteration of spectral
        # norm in the original's order (torch's parametrization misses by about 4e-4).
        generator.train()
        assert _max_diff(generator(expected["semantics"], z), expected["fake_train"]) <= TOL


def test_imported_discriminator_reproduces_the_originals_features(imported):
    run, expected = imported["spade"]
    cfg = load_config_file(run / "config.json")
    discriminator = build_discriminator(cfg)
    discriminator.load_state_dict(load_checkpoint(latest_path(run))["discriminator"])
    with torch.no_grad():
        out = discriminator.eval()(torch.cat([expected["semantics"], expected["real"]], dim=1))
    assert len(out) == len(expected["D_real"])
    for ours, theirs in zip(out, expected["D_real"]):
        assert len(ours) == len(theirs)
        assert _max_diff(ours[-1], theirs[-1]) <= TOL  # the prediction
        # Instance-normalised features are of order 4, not 1e-3, where float32 rounding alone
        # is a few ulps: measured 3.6e-6 absolute, and in float64 our and the original's
        # features are equally far (up to 3.4e-6 and 2.3e-6) from the exact values.
        assert all(_max_diff(a, b) <= 2 * TOL * max(1.0, b.abs().max().item()) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("name", ["spade", "spade-vae"])
def test_semantics_from_the_label_and_instance_pngs_equal_the_originals(imported, name):
    run, expected = imported[name]
    data = load_config_file(run / "config.json").data
    labels, instances = [], []
    for i in range(2):
        labels.append(torch.from_numpy(load_label_array(FIXTURE / "inputs" / f"{name}-label-{i}.png", data)))
        instances.append(torch.from_numpy(load_instance_array(FIXTURE / "inputs" / f"{name}-instance-{i}.png",
                                                              f"{name}-{i}")))
    semantics = semantic_input(torch.stack(labels), torch.stack(instances), data)
    assert torch.equal(semantics, expected["semantics"])


def test_config_and_provenance(imported):
    run, _ = imported["spade-vae"]
    cfg = load_config_file(run / "config.json")
    assert (cfg.variant, cfg.data.label_nc, cfg.data.contain_dontcare, cfg.data.use_instance) == \
        ("spade-vae", 8, True, True)
    assert (cfg.generator.ngf, cfg.encoder.ndf, cfg.discriminator.ndf) == (4, 4, 8)  # E is ngf wide
    assert (cfg.generator.param_free_norm, cfg.discriminator.norm, cfg.loss.perceptual) == \
        ("syncbatch", "instance", "none")
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["source"] == "nvlabs" and provenance["note"] == "imported from NVlabs"
    assert Path(provenance["source_dir"]) == _fixture("spade-vae").resolve()
    assert set(provenance["files"]) == {"opt.txt", *NETWORK_FILES.values()}
    assert json.loads((run / "train_summary.json").read_text())["status"] == "finished"


def test_export_then_import_round_trips_every_tensor(imported, tmp_path):
    run, _ = imported["spade-vae"]
    result = CliRunner().invoke(app, ["export-nvlabs", str(run), "--out", str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    # The exported files are the original's, key for key and bit for bit.
    for name in NETWORK_FILES.values():
        original = torch.load(_fixture("spade-vae") / name, weights_only=True)
        exported = torch.load(tmp_path / "exported" / name, weights_only=True)
        assert sorted(exported) == sorted(original)
        assert all(torch.equal(exported[k], original[k]) for k in original)
    assert read_options(tmp_path / "exported" / "opt.txt")["norm_G"] == "spectralspadesyncbatch3x3"
    import_nvlabs(tmp_path / "exported", tmp_path / "again", dataset="synthetic",
                  overrides=["data.dont_care_value=8"])
    first, second = load_checkpoint(latest_path(run)), load_checkpoint(latest_path(tmp_path / "again"))
    assert load_config_file(run / "config.json") == load_config_file(tmp_path / "again" / "config.json")
    for net in ("generator", "discriminator", "encoder"):
        assert list(first[net]) == list(second[net])
        assert all(torch.equal(first[net][k], second[net][k]) for k in first[net])


def test_imported_run_fine_tunes_with_train_resume(tmp_path):
    """One training step from the imported weights, on a folder dataset of the fixture's PNGs."""
    checkpoint_dir = _fixture("spade")  # skips when ../shared is absent
    root = tmp_path / "data"
    for split in ("train", "val"):
        for sub, kind in (("images", "image"), ("labels", "label"), ("instances", "instance")):
            (root / split / sub).mkdir(parents=True)
            for i in range(2):
                shutil.copy(FIXTURE / "inputs" / f"spade-{kind}-{i}.png", root / split / sub / f"{i}.png")
    import_nvlabs(checkpoint_dir, tmp_path / "run", dataset="folder", root=str(root),
                  overrides=["train.steps=1", "train.decay_steps=0", "train.device=cpu", "data.num_workers=0",
                             "train.sample_every=1000", "train.checkpoint_every=1000"])
    before = load_checkpoint(latest_path(tmp_path / "run"))["generator"]
    result = train_run(load_saved_config(tmp_path / "run"), tmp_path / "run", resume=True, progress=False)
    assert (result.status, result.step) == ("finished", 1)
    after = load_checkpoint(latest_path(tmp_path / "run"))["generator"]
    key = "head_0.conv_0.parametrizations.weight.original"
    assert not torch.equal(before[key], after[key])


def test_options_spade_bench_cannot_express_are_named_in_one_error():
    raw = read_options(_fixture("spade") / "opt.txt")
    raw.update(norm_D="spectralsync_batch", gan_mode="w", preprocess_mode="scale_width", netG="fpse")
    with pytest.raises(ConfigError) as info:
        config_from_options(raw, dataset="synthetic")
    message = str(info.value)
    for option in ("norm_D=spectralsync_batch", "gan_mode=w", "preprocess_mode=scale_width", "netG=fpse"):
        assert option in message


def test_key_maps_are_inverse():
    theirs = {"up_0.conv_0.weight_orig": torch.ones(1), "up_0.conv_0.weight_u": torch.ones(1),
              "up_0.conv_0.weight_v": torch.ones(1), "up_0.conv_0.bias": torch.ones(1),
              "fc.weight": torch.ones(1)}
    ours = from_nvlabs_keys(theirs)
    assert "up_0.conv_0.parametrizations.weight.0._u" in ours and "fc.weight" in ours
    assert list(to_nvlabs_keys(ours)) == list(theirs)


def _trained_here(cfg, run):
    """A run directory of `cfg` at step 0, written as the trainer writes one."""
    Trainer(cfg, run, device=torch.device("cpu"), progress=False, with_data=False).save()
    save_config(cfg, run / "config.json")
    return run


def test_pix2pixhd_run_exports_in_the_originals_layout_and_round_trips(tmp_path):
    cfg = resolve("pix2pixhd", preset="smoke", overrides=[
        "generator.ngf=4", "generator.pix2pixhd_blocks=1", "generator.pix2pixhd_downsamples=2",
        "discriminator.ndf=4", "loss.perceptual=none"])
    run = _trained_here(cfg, tmp_path / "run")
    exported = CliRunner().invoke(app, ["export-nvlabs", str(run), "--out", str(tmp_path / "x")])
    assert exported.exit_code == 0, exported.output
    options = read_options(tmp_path / "x" / "opt.txt")
    assert (options["netG"], options["norm_G"], options["resnet_n_downsample"]) == ("pix2pixhd", "spectralinstance", "2")
    exported = torch.load(tmp_path / "x" / "latest_net_G.pth", weights_only=True)
    assert not any("parametrizations" in k for k in exported) and any(k.endswith("weight_orig") for k in exported)
    import_nvlabs(tmp_path / "x", tmp_path / "again", dataset="synthetic",
                  overrides=["data.load_size=64", "data.num_workers=0"])
    first, second = load_checkpoint(latest_path(run)), load_checkpoint(latest_path(tmp_path / "again"))
    for net in ("generator", "discriminator"):
        assert sorted(first[net]) == sorted(second[net])
        assert all(torch.equal(first[net][k], second[net][k]) for k in first[net])


def test_import_with_ema_starts_the_ema_from_the_imported_generator(tmp_path):
    """With train.ema the EMA generator is what eval and export use: it must hold the imported
    weights, not the initial ones it was copied from before the files were loaded."""
    cfg = resolve("pix2pixhd", preset="smoke", overrides=[
        "generator.ngf=4", "generator.pix2pixhd_blocks=1", "generator.pix2pixhd_downsamples=2",
        "discriminator.ndf=4", "loss.perceptual=none", "train.seed=5"])
    run = _trained_here(cfg, tmp_path / "run")
    export_nvlabs(run, tmp_path / "x")
    import_nvlabs(tmp_path / "x", tmp_path / "again", dataset="synthetic",
                  overrides=["data.load_size=64", "data.num_workers=0", "train.ema=true"])
    state = load_checkpoint(latest_path(tmp_path / "again"))
    trained = load_checkpoint(latest_path(run))["generator"]
    assert sorted(state["ema"]) == sorted(trained)
    assert all(torch.equal(state["ema"][k], trained[k]) and torch.equal(state["generator"][k], trained[k])
               for k in trained)


def test_export_refuses_what_the_original_cannot_build(tmp_path):
    cfg = resolve("concat", preset="smoke", overrides=["generator.ngf=4", "discriminator.ndf=4",
                                                        "loss.perceptual=none"])
    run = _trained_here(cfg, tmp_path / "run")
    result = CliRunner().invoke(app, ["export-nvlabs", str(run), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "generator.arch=concat" in result.output
    assert not (tmp_path / "x").exists()


def test_export_refuses_a_conditioning_layer_other_than_spade(tmp_path):
    """netG=spade with the original's SPADE blocks could not load CLADE's weights."""
    with pytest.raises(ConfigError, match="generator.cond_norm=clade"):
        options_from_config(resolve("clade"), "x")
    run = _trained_here(resolve("clade", overrides=["generator.ngf=4", "discriminator.ndf=4",
                                                    "loss.perceptual=none", "data.crop_size=64",
                                                    "data.load_size=64"]), tmp_path / "run")
    result = CliRunner().invoke(app, ["export-nvlabs", str(run), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "generator.cond_norm=clade" in result.output
    assert not (tmp_path / "x").exists()


def test_export_of_a_substitute_perceptual_loss_warns_that_opt_txt_states_vgg():
    cfg = resolve("spade", overrides=["loss.perceptual=effnet-lite0"])
    with pytest.warns(UserWarning, match=r"no_vgg_loss False.*only when training on with the original"):
        opts = options_from_config(cfg, "x")
    assert opts["no_vgg_loss"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert options_from_config(resolve("spade", overrides=["loss.perceptual=none"]), "x")["no_vgg_loss"]


def _opt_txt_with(tmp_path, **changes) -> dict:
    """The fixture's opt.txt, copied into tmp_path with some options changed, read back."""
    text = (_fixture("spade") / "opt.txt").read_text()
    for key, value in changes.items():
        text, n = re.subn(rf"^(\s*{key}: )\S+", rf"\g<1>{value}", text, flags=re.M)
        assert n == 1, key
    (tmp_path / "opt.txt").write_text(text)
    return read_options(tmp_path / "opt.txt")


def test_import_with_ttur_uses_the_originals_betas_whatever_opt_txt_says(tmp_path):
    """The original's create_optimizers replaces --beta1/--beta2 by (0, 0.9) under TTUR."""
    cfg = config_from_options(_opt_txt_with(tmp_path, beta1="0.5", beta2="0.999"), dataset="synthetic")
    assert (cfg.optim.ttur, cfg.optim.beta1, cfg.optim.beta2) == (True, 0.0, 0.9)
    cfg = config_from_options(_opt_txt_with(tmp_path, beta1="0.5", beta2="0.999", no_TTUR="True"),
                              dataset="synthetic")
    assert (cfg.optim.ttur, cfg.optim.beta1, cfg.optim.beta2) == (False, 0.5, 0.999)


def test_export_warns_when_ttur_betas_differ_from_the_originals():
    cfg = resolve("spade", overrides=["loss.perceptual=none", "optim.beta1=0.5", "optim.beta2=0.999"])
    with pytest.warns(UserWarning, match=r"original trains with TTUR's betas \(0.0, 0.9\)"):
        opts = options_from_config(cfg, "x")
    assert (opts["no_TTUR"], opts["beta1"], opts["beta2"]) == (False, 0.5, 0.999)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        options_from_config(resolve("spade", overrides=["loss.perceptual=none", "optim.ttur=false",
                                                        "optim.beta1=0.5", "optim.beta2=0.999"]), "x")
        options_from_config(resolve("spade", overrides=["loss.perceptual=none"]), "x")


def test_weights_of_the_wrong_shape_are_named_with_both_shapes(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["0.weight"] = torch.zeros(4, 2)
    state["extra.bias"] = torch.zeros(1)
    del state["1.bias"]
    torch.save(state, tmp_path / "net.pth")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        _load_weights(net, tmp_path / "net.pth")
    message = str(info.value)
    assert "0.weight (file (4, 2), network (3, 2))" in message
    assert "missing 1.bias" in message and "unexpected extra.bias" in message
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing loaded
    torch.save(before, tmp_path / "good.pth")
    _load_weights(net, tmp_path / "good.pth")


# ----------------------------------------------------------------------------- issue 21: import faults

def _exported(tmp_path, variant="spade", *extra) -> Path:
    """An NVlabs folder written by export-nvlabs from a small run made here (every option the
    original writes is in its opt.txt)."""
    cfg = resolve(variant, preset="smoke", overrides=[
        "generator.ngf=4", "generator.spade_hidden=128", "encoder.ndf=4", "discriminator.ndf=4",
        "loss.perceptual=none", *extra])
    run = _trained_here(cfg, tmp_path / f"{variant}-run")
    export_nvlabs(run, tmp_path / f"{variant}-nvlabs")
    return tmp_path / f"{variant}-nvlabs"


def _edit_opt(folder: Path, key: str, value=None) -> None:
    """Set option `key` to `value` in opt.txt; None drops its line."""
    lines = (folder / "opt.txt").read_text().splitlines(keepends=True)
    out = [ln if ln.split(":", 1)[0].strip() != key else ("" if value is None else f"{key:>25}: {value}\n")
           for ln in lines]
    (folder / "opt.txt").write_text("".join(out))


@pytest.mark.parametrize("cut", ["aspect_ratio", "num_upsampling_layers", "after ngf"])
def test_an_option_that_shapes_a_network_must_be_in_opt_txt(tmp_path, cut):
    """At 6b04d6e a missing line silently became spade-bench's default, which builds another network."""
    folder = _exported(tmp_path)
    if cut == "after ngf":
        text = (folder / "opt.txt").read_text()
        (folder / "opt.txt").write_text(text[:text.index("ngf:") + len("ngf:")] + "\n")
        missing = ["ngf (empty", "no_instance (missing", "norm_G (missing", "num_D (missing"]
    else:
        _edit_opt(folder, cut)
        missing = [f"{cut} (missing"]
    with pytest.raises(ConfigError) as info:
        import_nvlabs(folder, tmp_path / "run", dataset="synthetic")
    assert all(m in str(info.value) for m in missing), str(info.value)
    assert not (tmp_path / "run").exists()


def test_discriminator_options_are_required_only_with_its_file(tmp_path):
    """A released (test-time) opt.txt has no discriminator options, and the folder no latest_net_D.pth."""
    folder = _exported(tmp_path)
    (folder / "latest_net_D.pth").unlink()
    for key in ("num_D", "n_layers_D", "norm_D", "netD"):
        _edit_opt(folder, key)
    provenance = import_nvlabs(folder, tmp_path / "run", dataset="synthetic")
    assert provenance["networks"]["discriminator"] == "initialised (not in the folder)"


@pytest.mark.parametrize("name", ["SPADE", "Spade", "spade"])
def test_netg_is_looked_up_as_the_original_does(tmp_path, name):
    folder = _exported(tmp_path)
    _edit_opt(folder, "netG", name)
    import_nvlabs(folder, tmp_path / "run", dataset="synthetic")
    assert load_config_file(tmp_path / "run" / "config.json").generator.arch == "spade"


@pytest.mark.parametrize("key, value, named", [
    ("aspect_ratio", "0", "data.aspect_ratio must be"), ("ngf", "-1", "generator.ngf must be"),
    ("num_D", "0", "discriminator.num_D must be"), ("lr", "nan", "lr=nan (not a finite number)"),
    ("label_nc", "100000000000", "data.label_nc must be"),
])
def test_import_validates_the_options_as_any_config(tmp_path, key, value, named):
    folder = _exported(tmp_path)
    _edit_opt(folder, key, value)
    result = CliRunner().invoke(app, ["import-nvlabs", str(folder), "--out", str(tmp_path / "run"),
                                      "--dataset", "synthetic"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert named in result.stderr and "opt.txt" in result.stderr
    assert not (tmp_path / "run").exists()


def test_non_finite_weights_name_the_file_and_tensor_and_write_nothing(tmp_path):
    folder = _exported(tmp_path)
    weights = torch.load(folder / "latest_net_G.pth", weights_only=True)
    key = next(k for k, v in weights.items() if v.is_floating_point())
    weights[key][0] = float("nan")
    torch.save(weights, folder / "latest_net_G.pth")
    result = CliRunner().invoke(app, ["import-nvlabs", str(folder), "--out", str(tmp_path / "run"),
                                      "--dataset", "synthetic"])
    assert result.exit_code == 2, result.output
    assert f"latest_net_G.pth: tensor {key} holds NaN" in result.stderr and "last good one" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_export_leaves_out_a_discriminator_the_import_made_up(tmp_path):
    """At 6b04d6e a folder without latest_net_D.pth imported a random D, and export wrote it as
    latest_net_D.pth, which the original's --continue_train would take for a trained one."""
    folder = _exported(tmp_path)
    (folder / "latest_net_D.pth").unlink()
    import_nvlabs(folder, tmp_path / "run", dataset="synthetic")
    with pytest.warns(UserWarning, match=r"latest_net_D\.pth not written: .* initialised at import"):
        written = export_nvlabs(tmp_path / "run", tmp_path / "again")
    assert "latest_net_D.pth" not in written and not (tmp_path / "again" / "latest_net_D.pth").exists()
    assert (tmp_path / "again" / "latest_net_G.pth").is_file()


def test_a_vae_below_crop_256_says_how_our_encoder_differs(tmp_path):
    folder = _exported(tmp_path, "spade-vae")
    with pytest.warns(UserWarning, match=r"crop_size 64 with use_vae: the original's encoder cannot run these "
                                         r"weights .* resizes to 128x128"):
        import_nvlabs(folder, tmp_path / "run", dataset="synthetic")
