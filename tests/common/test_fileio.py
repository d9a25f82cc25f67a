"""The one atomic write: whole file or nothing, readable under the user's umask."""

from __future__ import annotations

import os

import pytest

from common.fileio import atomic_path, atomic_write_text


def test_atomic_write_follows_the_umask_and_leaves_nothing_on_failure(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        assert (path.stat().st_mode & 0o777) == 0o644  # group and others may read, as with a plain open
        os.umask(0o077)
        assert (atomic_write_text(tmp_path / "b.json", "{}").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "a.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json",
                                                                                                         "b.json"]
