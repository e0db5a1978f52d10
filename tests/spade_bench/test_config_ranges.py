"""Issue 21, cause "no range or finiteness checks": every numeric field's range lives in the config
schema (`Range` on the field), so `config`, `train`, `import-nvlabs` and everything else that resolves
or loads a config refuse the same values, with one line naming the key, the value and the fix."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from cli import app
from spade_bench.config import PRESETS, load_config_file, resolve, save_config, validate
from spade_bench.errors import ConfigError
from spade_bench.registry import list_variants

# (override, the key the error must name): each was accepted at 6b04d6e and then trained to
# "done", crashed with a traceback, or built a broken network.
HOSTILE = [
    ("optim.lr=-1", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("optim.lr=1e10", "optim.lr"),
    ("optim.lr=1e15", "optim.lr"), ("optim.beta2=1.5", "optim.beta2"), ("generator.ngf=0", "generator.ngf"),
    ("data.aspect_ratio=nan", "data.aspect_ratio"), ("data.aspect_ratio=0", "data.aspect_ratio"),
    ("discriminator.num_D=0", "discriminator.num_D"), ("train.device=tpu", "train.device"),
    ("eval.batch_size=0", "eval.batch_size"), ("eval.kid_subsets=0", "eval.kid_subsets"),
    (f"train.seed={2 ** 70}", "train.seed"), ("train.ema_decay=100", "train.ema_decay"),
    ("loss.lambda_feat=-10", "loss.lambda_feat"), ("discriminator.n_layers=-3", "discriminator.n_layers"),
    ("generator.z_dim=0", "generator.z_dim"), ("eval.eval_size=7", "eval.eval_size"),
    ("data.label_nc=100000000000", "data.label_nc"), ("loss.lambda_kld=inf", "loss.lambda_kld"),
]


@pytest.mark.parametrize("override, key", HOSTILE, ids=[o for o, _ in HOSTILE])
def test_out_of_range_or_non_finite_settings_are_refused_naming_key_and_value(override, key):
    with pytest.raises(ConfigError) as info:
        resolve("spade", preset="smoke", overrides=[override])
    message = str(info.value)
    value = override.split("=", 1)[1]
    assert message.startswith(key) and "\n" not in message
    assert value.lower() in message.lower() or str(float(value)) in message   # the value as given or parsed
    assert "--set" in message or "--label-nc" in message                      # the fix


@pytest.mark.parametrize("override, key", HOSTILE[:6], ids=[o for o, _ in HOSTILE[:6]])
def test_config_command_prints_one_line_and_no_config(override, key):
    result = CliRunner().invoke(app, ["config", "--preset", "smoke", "--set", override])
    assert result.exit_code == 2
    assert result.stdout == ""                                         # no config printed
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}"), result.stderr
    assert "Traceback" not in result.output


def test_a_config_built_in_code_meets_the_same_ranges():
    """A variant, an NVlabs import or any `replace` bypasses `--set` parsing: `validate` checks too."""
    cfg = resolve("spade", preset="smoke")
    with pytest.raises(ConfigError, match=r"optim\.lr must be a finite number, got nan"):
        validate(replace(cfg, optim=replace(cfg.optim, lr=float("nan"))))
    with pytest.raises(ConfigError, match=r"train\.ema_decay must be >= 0 and <= 1, got 100"):
        validate(replace(cfg, train=replace(cfg.train, ema_decay=100.0)))
    with pytest.raises(ConfigError, match=r"generator\.spade_kernel must be odd"):
        validate(replace(cfg, generator=replace(cfg.generator, spade_kernel=4)))


def test_a_hand_edited_config_file_is_refused_naming_the_file(tmp_path):
    cfg = resolve("spade", preset="smoke")
    path = tmp_path / "config.json"
    save_config(cfg, path)
    record = json.loads(path.read_text())
    record["generator"]["ngf"] = 0
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=rf"{path}: generator\.ngf must be >= 1 .*got 0"):
        load_config_file(path)


@pytest.mark.parametrize("variant", list_variants())
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_variant_and_preset_is_inside_the_ranges(variant, preset):
    """The ranges refuse nothing the project itself ships: each variant under each preset."""
    validate(resolve(variant, preset=preset, root="/data" if preset == "facades" else None))


def test_every_dataset_default_is_inside_the_ranges():
    from spade_bench.data.formats import FORMATS   # the dataset-format table

    for dataset in FORMATS:
        validate(resolve("spade", dataset=dataset, root="/data"))
