"""Variant registry: found by a package scan and an entry-point group, never by a list;
duplicates rejected; unknown names answered with "did you mean" and the list."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import baselines
from spade_bench.errors import VariantError
from spade_bench.registry import ENTRY_POINT_GROUP, get_variant, list_variants, register_variant, scan_package

ROOT = Path(__file__).resolve().parents[2]
LIST = "from spade_bench.registry import list_variants; print(' '.join(list_variants()))"


def run_python(code: str, *path: Path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose import path starts with `path`, then the repo."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, path), str(ROOT)]))
    return subprocess.run([sys.executable, "-c", code], cwd=path[0] if path else ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def copy_of_baselines(tmp_path: Path) -> Path:
    """A copy of the baselines package under tmp_path, which shadows the real one on the path."""
    shutil.copytree(Path(baselines.__file__).parent, tmp_path / "baselines",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_every_baselines_module_registers_a_variant():
    found = scan_package("baselines")
    assert "baselines.spade" in found and found["baselines.spade"] == ["spade"]
    assert all(found.values())
    assert sorted(name for names in found.values() for name in names) == \
        [v for v in list_variants() if get_variant(v).module.startswith("baselines.")]


def test_removing_or_adding_a_file_removes_or_adds_the_variant(tmp_path):
    root = copy_of_baselines(tmp_path)
    before = run_python(LIST, root)
    assert before.returncode == 0, before.stderr
    assert {"spade", "spade-k1", "clade"} <= set(before.stdout.split())
    (root / "baselines" / "kernel1.py").unlink()
    (root / "baselines" / "wide.py").write_text(textwrap.dedent('''
        """A variant that exists only in this copy: no list anywhere names it."""
        from dataclasses import replace
        from spade_bench.variants import register_variant

        @register_variant("spade-wide")
        def wide(base):
            """SPADE with a 256-wide MLP."""
            return replace(base, generator=replace(base.generator, spade_hidden=256))
        '''))
    after = run_python(LIST, root)
    assert after.returncode == 0, after.stderr
    assert set(after.stdout.split()) == set(before.stdout.split()) - {"spade-k1"} | {"spade-wide"}


def test_a_baselines_file_that_registers_nothing_is_an_error(tmp_path):
    root = copy_of_baselines(tmp_path)
    (root / "baselines" / "forgotten.py").write_text("def forgotten(base):\n    return base\n")
    (root / "baselines" / "_helpers.py").write_text("HELPER = 1\n")  # "_" marks a helper: allowed
    proc = run_python(LIST, root)
    assert proc.returncode != 0
    assert "forgotten.py registers no variant" in proc.stderr and "@register_variant" in proc.stderr


def test_an_entry_point_of_an_installed_package_adds_variants(tmp_path):
    """A throwaway distribution (a dist-info folder on the path, as pip would leave it)
    declares an entry point in the group; its module is imported only through
    importlib.metadata, since nothing else names it."""
    site = tmp_path / "site"
    (site / "throwaway_variants").mkdir(parents=True)
    (site / "throwaway_variants" / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import replace
        from spade_bench.variants import register_variant

        @register_variant("spade-throwaway")
        def throwaway(base):
            """SPADE with ngf 32, from another package."""
            return replace(base, generator=replace(base.generator, ngf=32))
        '''))
    code = LIST + "; import sys; print('imported' if 'throwaway_variants' in sys.modules else 'not imported')"
    without = run_python(code, site)
    assert without.returncode == 0, without.stderr
    assert "spade-throwaway" not in without.stdout.split() and "not imported" in without.stdout
    dist_info = site / "throwaway_variants-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-variants\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nthrowaway = throwaway_variants\n")
    with_entry_point = run_python(code, site)
    assert with_entry_point.returncode == 0, with_entry_point.stderr
    assert "spade-throwaway" in with_entry_point.stdout.split() and "\nimported" in with_entry_point.stdout


def test_a_broken_entry_point_names_its_package(tmp_path):
    dist_info = tmp_path / "broken_variants-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-variants\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = no_such_module_here\n")
    proc = run_python(LIST, tmp_path)
    assert proc.returncode != 0
    assert "broken-variants" in proc.stderr and "no_such_module_here" in proc.stderr


def test_unknown_name_suggests_the_closest_and_lists_all():
    with pytest.raises(VariantError, match=r"did you mean 'spade-gamma'\?.*known variants: .*clade"):
        get_variant("spade-gama")
    with pytest.raises(VariantError, match="known variants") as info:
        get_variant("xyzzy")
    assert "did you mean" not in str(info.value)


def test_duplicate_names_both_modules():
    with pytest.raises(VariantError, match=r"registered twice \(baselines\.spade and "):
        register_variant("spade")(lambda base: base)


def test_a_failed_scan_is_not_remembered_as_loaded(tmp_path):
    """A baseline that raises leaves the registry unloaded: the next lookup raises the same
    error again instead of "unknown variant" from the modules imported before it."""
    root = copy_of_baselines(tmp_path)
    # Sorted first, so the scan fails before any other baseline registers.
    (root / "baselines" / "a_broken.py").write_text("raise RuntimeError('broken baseline')\n")
    code = textwrap.dedent('''
        from spade_bench.registry import get_variant
        for attempt in range(2):
            try:
                get_variant("spade")
            except Exception as e:
                print(attempt, type(e).__name__, e)
        ''')
    proc = run_python(code, root)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all("broken baseline" in line for line in lines), proc.stdout
