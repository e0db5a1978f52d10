"""Metric registry: found by a package scan, never by a list; today's four metrics pinned; duplicates
rejected; unknown names answered with "did you mean" and the list; no torch to list them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import spade_bench.metrics as registry
from spade_bench.errors import EvalError
from spade_bench.metrics import (Metric, get_metric, list_metrics, metric_keys, metric_names, register_metric,
                                 resolve_request, scan_package, unscored, version_token)

ROOT = Path(__file__).resolve().parents[3]


def test_todays_four_metrics_are_still_registered_with_their_keys_and_spellings():
    """Pinned by hand on purpose: everything else derives its lists from the registry, so a
    metric lost from it would otherwise vanish silently from every table."""
    assert {"miou", "pixel_accuracy", "fid", "kid"} <= set(metric_names())
    assert metric_names()[:4] == ["miou", "pixel_accuracy", "fid", "kid"]     # the report's column order
    assert {"miou", "pixel_accuracy", "fid", "kid", "kid_std"} <= set(metric_keys())
    assert get_metric("acc").name == "pixel_accuracy"
    assert [get_metric(n).version for n in ("fid", "kid", "miou", "pixel_accuracy")] == [
        "spade-bench-fid/1", "spade-bench-kid/1", "spade-bench-confusion-miou/1", "spade-bench-confusion-miou/1"]
    assert get_metric("fid").reference.key == "fid_train_vs_val"
    assert {get_metric(n).reference.key for n in ("miou", "pixel_accuracy")} == {"real_val_miou",
                                                                                "real_val_pixel_accuracy"}


def test_every_module_of_the_package_registers_a_metric():
    found = scan_package()
    assert found["spade_bench.metrics.fid"] == ["fid"] and found["spade_bench.metrics.kid"] == ["kid"]
    assert all(found.values())
    assert sorted(n for names in found.values() for n in names) == sorted(
        m.name for m in list_metrics() if m.__module__.startswith("spade_bench.metrics."))


def test_a_module_that_registers_nothing_is_an_error(tmp_path, monkeypatch):
    package = tmp_path / "some_metrics"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "forgot.py").write_text('"""A metric file whose class lost its decorator."""\n')
    (package / "_helper.py").write_text("")                      # helpers start with _ and are skipped
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EvalError, match=r"forgot.py registers no metric; decorate"):
        scan_package("some_metrics")


def test_a_duplicate_name_or_alias_is_an_error_naming_both_modules():
    list_metrics()                                               # the package's metrics are registered

    class Again(Metric):
        name, version, direction, inputs = "fid", "x/1", "lower", "features"
        label = latex = short = "again"
        digits = 1

    with pytest.raises(EvalError, match=r"'fid' is registered twice \(spade_bench.metrics.fid and .*test_metric_registry"):
        register_metric(Again)

    class Alias(Metric):
        name, version, direction, inputs, aliases = "another", "x/1", "higher", "features", ("acc",)
        label = latex = short = "another"
        digits = 1

    with pytest.raises(EvalError, match="'acc' is registered twice"):
        register_metric(Alias)
    assert "another" not in registry.METRICS


def test_unknown_metric_says_did_you_mean_and_lists_the_choices():
    with pytest.raises(EvalError) as error:
        get_metric("fdi")
    message = str(error.value)
    assert "did you mean 'fid'?" in message
    assert all(name in message for name in metric_names()) and "pixel_accuracy (acc)" in message


def test_requests_expand_aliases_groups_and_all():
    assert resolve_request("acc") == resolve_request("miou") == ["miou", "pixel_accuracy"]   # one confusion matrix
    assert resolve_request("all") == metric_names()
    assert resolve_request("kid, fid") == ["fid", "kid"]                                      # column order
    assert resolve_request(["fid"]) == ["fid"]
    features = resolve_request("all", inputs="features")
    assert "fid" in features and "miou" not in features
    with pytest.raises(EvalError, match="'miou' needs a run"):
        resolve_request("miou", inputs="features")
    with pytest.raises(EvalError, match="--metric is empty"):
        resolve_request(" , ")


def test_unscored_names_missing_metrics_and_other_versions():
    fid = get_metric("fid")
    record = {"metrics": {"fid": 10.0, "kid": 0.1, "miou": None},
              "protocol": {"metric_versions": {"fid": fid.version_string(), "kid": "spade-bench-kid/0 (old)",
                                               "miou": get_metric("miou").version_string()}}}
    todo = unscored(record)
    assert "fid" not in todo
    assert todo["kid"] == "scored with spade-bench-kid/0, now spade-bench-kid/1"
    assert todo["miou"] == "not scored"                          # a null value is not a score
    assert set(todo) == set(metric_names()) - {"fid"}
    assert version_token(fid.version_string()) == fid.version


def test_listing_the_metrics_imports_no_torch():
    """The CLI builds --metric's help from the registry, and reports read it: NumPy only."""
    code = ("import sys; from spade_bench.metrics import choices_text, list_metrics; "
            "[m.version_string() for m in list_metrics()]; print(choices_text()); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False" and "pixel_accuracy (acc)" in done.stdout


def test_adding_a_file_adds_a_metric_everywhere(tmp_path):
    """One file in the package is all a metric needs: the registry, the harness's --metric and the
    report's columns pick it up (here in a copy of the package that shadows the real one)."""
    shutil.copytree(ROOT / "spade_bench", tmp_path / "spade_bench", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "spade_bench" / "metrics" / "mean_feature_norm.py").write_text(textwrap.dedent('''
        """A toy metric that exists only in this copy: no list anywhere names it."""
        import numpy as np
        from spade_bench.metrics import register_metric
        from spade_bench.metrics._base import Score
        from spade_bench.metrics._features import FeatureMetric

        @register_metric
        class MeanFeatureNorm(FeatureMetric):
            name, version, direction = "feature_norm", "toy-norm/1", "lower"
            label = latex = short = "feature norm"
            digits, order = 2, 99

            def compute(self, context):
                return Score(float(np.linalg.norm(self.fake_features(), axis=1).mean()))
        '''))
    code = ("from spade_bench.metrics import metric_names, resolve_request; "
            "from reports.tables import SPECS; print(metric_names()[-1], resolve_request('all')[-1], "
            "SPECS['feature_norm'].label)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)])))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["feature_norm", "feature_norm", "feature", "norm"]
