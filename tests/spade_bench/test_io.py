"""spade_bench.io: files written whole and readable as the umask says; folders written whole
(issue 21: a report killed part way left new figures beside old tables; files were 0600 whatever
the umask, so collaborators on a shared file system could not read results)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from spade_bench.errors import StorageError
from spade_bench import io
from spade_bench.io import atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_files_follow_the_umask(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "metrics.json") == expected


def test_a_checkpoint_follows_the_umask(tmp_path):
    import torch

    from spade_bench.checkpoint import save_checkpoint

    previous = os.umask(0o002)
    try:
        path = save_checkpoint(tmp_path, 1, {"step": 1, "w": torch.ones(2)}, keep=1)
    finally:
        os.umask(previous)
    assert _mode(path) == 0o664


def test_a_staged_folder_replaces_the_old_one_whole(tmp_path):
    final = tmp_path / "report"
    final.mkdir()
    (final / "table.md").write_text("old table")
    (final / "old-figure.png").write_text("old figure")
    owned = lambda folder: (folder / "table.md").is_file()   # noqa: E731
    with io.staged_folder(final, owns=owned) as staging:
        assert staging.parent == tmp_path and staging != final
        (staging / "table.md").write_text("new table")
        assert (final / "table.md").read_text() == "old table"   # readers see the old one meanwhile
    assert sorted(p.name for p in final.iterdir()) == ["table.md"] and (final / "table.md").read_text() == "new table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]   # no staging folder left


def test_a_failure_part_way_leaves_the_old_folder_as_it_was(tmp_path):
    final = tmp_path / "report"
    final.mkdir()
    (final / "table.md").write_text("old table")
    with pytest.raises(OSError):
        with io.staged_folder(final, owns=lambda folder: True) as staging:
            (staging / "figure.png").write_text("new figure")
            raise OSError(28, "No space left on device")
    assert sorted(p.name for p in final.iterdir()) == ["table.md"] and (final / "table.md").read_text() == "old table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_killed_writers_staging_folder_is_cleared_by_the_next(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    leftover = tmp_path / f".report.staging-{proc.pid}"
    leftover.mkdir()
    (leftover / "half.md").write_text("half")
    with io.staged_folder(tmp_path / "report") as staging:
        (staging / "table.md").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    final = tmp_path / "thesis"
    final.mkdir()
    (final / "chapter1.tex").write_text("precious")
    with pytest.raises(StorageError, match=r"thesis holds files that are not a report folder \(chapter1.tex\)"):
        with io.staged_folder(final, what="report folder", owns=lambda folder: False):
            raise AssertionError("never reached")
    assert (final / "chapter1.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]
