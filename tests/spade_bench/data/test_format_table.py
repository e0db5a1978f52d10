"""The dataset-format table (spade_bench/data/formats/): every format file declares a consistent
format, the config's dataset names and defaults come from it, and raw label values map by each
format's declaration. Parametrised over the table, so a new format is checked here for free."""
from __future__ import annotations

import textwrap
from dataclasses import fields, replace

import numpy as np
import pytest

from spade_bench import config
from spade_bench.config import DataConfig, GeneratorConfig, RunConfig, apply_overrides, validate, with_dataset
from spade_bench.data import class_names, dataset_palette
from spade_bench.data import files
from spade_bench.data.formats import FORMATS, DatasetFormat, dataset_format, scan_formats
from spade_bench.errors import ConfigError, DataError

NAMES = list(FORMATS)


def test_the_config_takes_its_dataset_names_from_the_table():
    assert config.choices(DataConfig, "dataset") == tuple(FORMATS)
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'; known: " + ", ".join(FORMATS)):
        with_dataset(RunConfig(), "imagenet")
    with pytest.raises(ConfigError, match="data.dataset: 'imagenet' is not one of"):
        apply_overrides(RunConfig(), ["data.dataset=imagenet"])
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        dataset_format("imagenet")


@pytest.mark.parametrize("name", NAMES)
def test_each_format_is_consistent(name):
    fmt = FORMATS[name]
    assert fmt.name == name and fmt.description
    assert set(fmt.data_defaults) <= {f.name for f in fields(DataConfig)}
    assert set(fmt.generator_defaults) <= {f.name for f in fields(GeneratorConfig)}
    cfg = with_dataset(RunConfig(), name, None if fmt.procedural else "/data")
    for key, value in fmt.data_defaults.items():
        assert getattr(cfg.data, key) == value
    for key, value in fmt.generator_defaults.items():
        assert getattr(cfg.generator, key) == value
    validate(cfg)
    if fmt.needs_root:
        with pytest.raises(ConfigError, match="needs --root"):
            validate(replace(cfg, data=replace(cfg.data, root=None)))
    d = cfg.data
    if fmt.palette is not None:
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in fmt.palette)
        if d.label_nc == len(fmt.palette):
            assert np.array_equal(dataset_palette(d)[:d.label_nc], np.array(fmt.palette, dtype=np.uint8))
    if fmt.class_names is not None and d.label_nc == len(fmt.class_names):
        assert class_names(d) == list(fmt.class_names)
    first, last = files.raw_class_range(d)
    assert first == fmt.first_class_value and last - first + 1 == d.label_nc
    if fmt.dont_care is not None:
        assert not first <= fmt.dont_care <= last, "the don't-care value is also a class value"
    assert fmt.test_photos is None or all(isinstance(part, str) and part for part in fmt.test_photos)
    assert fmt.procedural == (fmt.list_pairs is None)


@pytest.mark.parametrize("name", NAMES)
def test_raw_values_map_as_the_format_declares(name):
    fmt = FORMATS[name]
    d = with_dataset(RunConfig(), name, None if fmt.procedural else "/data").data
    d = replace(d, contain_dontcare=True)
    first, n = fmt.first_class_value, d.label_nc
    classes = np.arange(first, first + n)
    for dtype in (np.uint8, np.uint16, np.int64):
        if classes.max() > np.iinfo(dtype).max:
            continue
        assert np.array_equal(files.raw_to_index(classes.astype(dtype), d), np.arange(n))
    dont_care = files.raw_dont_care(d)
    assert dont_care == fmt.dont_care
    if dont_care is not None:
        assert files.raw_to_index(np.array([dont_care], dtype=np.int64), d).tolist() == [n]
        without = replace(d, contain_dontcare=False)
        assert files.raw_to_index(np.array([dont_care]), without).tolist() == [files.DONT_CARE_DISABLED]
        if not fmt.dont_care_fixed:   # the config's don't-care value replaces the format's
            other = first + n + 3
            moved = replace(d, dont_care_value=other)
            assert files.raw_to_index(np.array([other]), moved).tolist() == [n]
    # A value past the classes is refused, and the --label-nc the message suggests takes it.
    beyond = np.array([first + n + 1 if first + n + 1 != dont_care else first + n + 2], dtype=np.int64)
    index = files.raw_to_index(beyond, d)
    assert index.tolist() == [files.OUT_OF_RANGE]
    message = files.label_value_problem(beyond, index, d)
    suggested = int(message.split("pass --label-nc ")[1].split()[0])
    assert files.raw_to_index(beyond, replace(d, label_nc=suggested)).tolist() == [suggested - 1]


def _write_package(root, name: str, modules: dict[str, str]) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, text in modules.items():
        (package / f"{module}.py").write_text(textwrap.dedent(text))


FORMAT_FILE = """
    from spade_bench.data.formats import DatasetFormat
    FORMAT = DatasetFormat(name={name!r}, description="test format")
"""


def test_the_scan_finds_every_file_and_refuses_a_file_without_a_format(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _write_package(tmp_path, "fmt_ok", {"one": FORMAT_FILE.format(name="one"), "two": FORMAT_FILE.format(name="two"),
                                        "_helper": "X = 1\n"})
    found = scan_formats("fmt_ok")
    assert list(found) == ["one", "two"] and all(isinstance(f, DatasetFormat) for f in found.values())
    _write_package(tmp_path, "fmt_missing", {"one": FORMAT_FILE.format(name="one"), "forgot": "X = 1\n"})
    with pytest.raises(DataError, match=r"forgot\.py declares no dataset format"):
        scan_formats("fmt_missing")
    _write_package(tmp_path, "fmt_twice", {"a": FORMAT_FILE.format(name="same"), "b": FORMAT_FILE.format(name="same")})
    with pytest.raises(DataError, match="'same' is declared twice"):
        scan_formats("fmt_twice")
