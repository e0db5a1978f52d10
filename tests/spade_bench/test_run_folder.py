"""The run folder: one owner of its names, one JSON reader that names the file and the problem,
code state and provenance, and the layers that must not import the trainer to get them."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spade_bench import run_folder
from spade_bench.errors import RunFolderError
from spade_bench.run_folder import (RunFolder, code_state, read_json, read_json_or_empty, read_provenance,
                                    try_read_json, write_json, write_provenance)

ROOT = Path(__file__).resolve().parents[2]

BROKEN = [
    ("not JSON", b'{"status": "finis', "is not readable JSON"),
    ("not UTF-8", b"\xff\xfe{}", "cannot be read"),
    ("a list", b"[1, 2]", "does not hold a JSON object (it holds a list)"),
    ("a string", b'"finished"', "does not hold a JSON object (it holds a str)"),
]


@pytest.mark.parametrize("what, content, problem", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_record_is_named_with_its_problem(tmp_path, what, content, problem):
    path = tmp_path / "train_summary.json"
    path.write_bytes(content)
    data, message = try_read_json(path)
    assert data is None and message.startswith(str(path)) and problem in message
    with pytest.raises(RunFolderError) as caught:
        read_json(path)
    assert str(caught.value) == message
    with pytest.raises(RunFolderError):
        read_json(path, missing_ok=True)   # missing_ok forgives a missing file, never a broken one
    assert read_json_or_empty(path) == {}


def test_missing_and_good_records(tmp_path):
    path = tmp_path / "env.json"
    assert try_read_json(path) == (None, None)
    assert read_json(path, missing_ok=True) == {} and read_json_or_empty(path) == {}
    with pytest.raises(RunFolderError, match=r"env\.json is missing"):
        read_json(path)
    (tmp_path / "folder.json").mkdir()
    assert "cannot be read" in try_read_json(tmp_path / "folder.json")[1]
    write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert try_read_json(path) == ({"a": [1, 2], "b": 1}, None) and read_json(path) == {"a": [1, 2], "b": 1}


def test_provenance_missing_written_and_broken(tmp_path):
    assert read_provenance(tmp_path) is None
    record = {"source": "nvlabs", "files": {"opt.txt": "0" * 64}}
    assert write_provenance(tmp_path, record) == RunFolder(tmp_path).provenance
    assert read_provenance(tmp_path) == record
    # A broken record must not read as "trained here": that would turn released weights into a seed.
    RunFolder(tmp_path).provenance.write_text('{"source": "nvl')
    with pytest.raises(RunFolderError, match="provenance.json is not readable JSON"):
        read_provenance(tmp_path)


def test_code_state_in_and_outside_a_git_tree(monkeypatch):
    state = code_state()
    inside = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if inside.returncode == 0:
        assert state["commit"] == inside.stdout.strip() and isinstance(state["dirty"], bool)
    else:
        assert state == {"commit": None, "dirty": None}

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(run_folder.subprocess, "run", no_git)
    assert code_state() == {"commit": None, "dirty": None}


def test_is_run_by_any_marker(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert not folder.is_run()
    folder.eval.mkdir(parents=True)
    assert not folder.is_run()
    folder.metrics.write_text("{}")
    assert folder.is_run()
    assert folder.sample_grid(7).name == "step_0000007.png" and folder.losses.parent == folder.logs


# The record names a run folder holds; each is spelled in spade_bench/run_folder.py only.
NAMES = {run_folder.CONFIG, run_folder.ENV, run_folder.SUMMARY, run_folder.PROVENANCE, run_folder.LOSSES,
         run_folder.LOSSES_CSV, run_folder.METRICS, run_folder.FAILURE_TRACEBACK}


def _code_files():
    yield ROOT / "cli.py"
    for package in ("spade_bench", "eval", "reports", "runners", "baselines"):
        yield from sorted((ROOT / package).rglob("*.py"))


def test_each_record_name_is_spelled_once():
    """A string literal that is exactly a record's name, outside run_folder.py, is a second owner
    of the layout (docstrings and messages that mention a name in prose are not literals of it)."""
    spelled = []
    for path in _code_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    owner = "spade_bench/run_folder.py"
    assert [s for s in spelled if not s.startswith(owner)] == []
    assert sorted(s.split()[-1] for s in spelled) == sorted(repr(n) for n in NAMES)


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_run_folder_module_is_light_and_eval_does_not_import_the_trainer():
    assert "torch" not in _imported_after("import spade_bench.run_folder")
    modules = _imported_after("import eval.protocol, eval.harness")
    assert not {"spade_bench.trainer", "spade_bench.nvlabs", "spade_bench.engine"} & modules
