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


def _tree(folder):
    """Every file under ``folder`` with its text, hidden ones included."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _make(folder, files):
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


OLD = {"front.csv": "old", "choice.json": "old", "state/ckpt": "resume"}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_atomic_dir_switches_the_set_and_keeps_what_it_does_not_own(tmp_path, monkeypatch, exchange):
    import common.fileio as fileio

    if not exchange:
        monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    out = tmp_path / "search"
    _make(out, OLD)
    with fileio.atomic_dir(out, owned=("front.csv", "choice.json")) as new:
        assert new.parent == tmp_path and new.name.startswith(".search.new-") and not list(new.iterdir())
        (new / "front.csv").write_text("new")  # no choice this time: the old one must not survive
    assert _tree(out) == {"front.csv": "new", "state/ckpt": "resume"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search"]
    with pytest.raises(RuntimeError), fileio.atomic_dir(out, owned=("front.csv",)) as new:
        (new / "front.csv").write_text("half")
        raise RuntimeError("crash while writing")
    assert _tree(out) == {"front.csv": "new", "state/ckpt": "resume"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search"]


def test_a_file_in_the_way_is_named(tmp_path):
    from common.fileio import atomic_dir

    (tmp_path / "search").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="search"), atomic_dir(tmp_path / "search"):
        pass


NEW = {"front.csv": "new", "choice.json": "new", ".switch-ready": ""}


@pytest.mark.parametrize("left, expected", [
    ({"search": OLD, ".search.new-1": {"front.csv": "half"}}, OLD),  # killed while writing: old kept
    ({"search": OLD, ".search.new-1": NEW},  # killed after the set was complete, before the switch
     {"front.csv": "new", "choice.json": "new", "state/ckpt": "resume"}),
    ({"search": {"front.csv": "old"}, ".search.new-1": {**NEW, "state/ckpt": "resume"}},  # killed mid-carry
     {"front.csv": "new", "choice.json": "new", "state/ckpt": "resume"}),
    ({".search.old-1": OLD, ".search.new-1": {**NEW, "state/ckpt": "resume"}},  # between the two renames
     {"front.csv": "new", "choice.json": "new", "state/ckpt": "resume"}),
    ({".search.old-1": OLD}, OLD),  # fallback killed after moving the old away, nothing new ready
    ({"search": {**NEW, "state/ckpt": "resume"}, ".search.new-1": OLD},  # exchanged, not yet renamed away
     {"front.csv": "new", "choice.json": "new", "state/ckpt": "resume"}),
], ids=["writing", "complete", "carrying", "between-renames", "old-moved-away", "exchanged"])
def test_recover_dir_finishes_or_undoes_a_killed_switch(tmp_path, left, expected):
    from common.fileio import recover_dir

    for name, files in left.items():
        (tmp_path / name).mkdir()
        _make(tmp_path / name, files)
    recover_dir(tmp_path / "search", owned=("front.csv", "choice.json"))
    assert _tree(tmp_path / "search") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search"]
