"""File writes shared by every package: atomic writes (temporary file, fsync, rename), folders switched as a
set, and JSON-lines rows."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The file is flushed to disk (fsync) before the rename and gets the permissions of a plain ``open`` under the
    user's umask (a colleague in the group can read it; ``mkstemp`` alone would leave 0600). A crash or exception
    inside the block leaves ``path`` as it was and removes the temporary file.

    Args:
        path: the final destination.
        suffix: suffix of the temporary file name (some writers look at the extension).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically and returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically and returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_save(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Calls ``writer(tmp_path)`` (e.g. ``lambda p: torch.save(obj, p)``) and renames the result."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (sorted keys) to ``path`` atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


READY = ".switch-ready"  # marks a new folder as complete; removed once it has replaced the old one


@contextlib.contextmanager
def atomic_dir(path: str | Path, owned: Collection[str] = ()) -> Iterator[Path]:
    """Yields a fresh sibling folder; on success it replaces the folder ``path`` as a whole.

    A reader of ``path`` sees the old set of files or the new set, never a mix. The new folder
    (``.NAME.new-XXXX`` beside ``path``) is marked complete, then the entries of the old folder that
    the new one lacks and that are not in ``owned`` (a resume checkpoint, a user's note) move into
    it, then the two are exchanged in one ``renameat2(RENAME_EXCHANGE)`` on Linux (elsewhere: two
    renames, with a moment where ``path`` is missing). An exception inside the block removes the new
    folder and leaves ``path`` as it was. A process killed mid-way leaves a sibling that the next
    ``atomic_dir`` (or :func:`recover_dir`) on the same path finishes: a complete new folder is
    switched in, an incomplete one deleted. One writer per ``path`` at a time: the caller holds a lock
    (``donna`` stages hold their run folder's), since a second writer's recovery would delete the
    first one's unfinished folder.

    Args:
        path: the folder to replace (created when missing).
        owned: names of the entries the new set replaces; an old entry of that name is dropped even
            when the new set does not write it (a ``selected.json`` with no new choice).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file is where a folder of outputs belongs; move it away", str(path))
    recover_dir(path, owned)
    new = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    try:
        os.chmod(new, 0o777 & ~_umask())
        yield new
        (new / READY).touch()
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    _switch(new, path, owned)


def recover_dir(path: str | Path, owned: Collection[str] = ()) -> None:
    """Finishes or undoes an :func:`atomic_dir` switch of ``path`` that a killed process left half done."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        (path / READY).unlink()  # switched in, killed before the marker went: the set is complete
    name = glob.escape(path.name)
    siblings = sorted(path.parent.glob(f".{name}.new-*")) + sorted(path.parent.glob(f".{name}.old-*"))
    ready = [p for p in siblings if ".new-" in p.name and (p / READY).is_file()]
    if ready:  # complete, killed before or during the switch: finish it
        _switch(ready[-1], path, owned)
    if not path.exists():  # the two-rename fallback killed between its renames with nothing new: put the old back
        old = [p for p in siblings if ".old-" in p.name and p.exists()]
        if old:
            os.rename(old[-1], path)
    for leftover in siblings:  # incomplete new sets and replaced old ones
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _switch(new: Path, path: Path, owned: Collection[str]) -> None:
    """Moves the old folder's other entries into the complete ``new``, then puts ``new`` at ``path``."""
    if path.is_dir():
        for entry in path.iterdir():
            if entry.name != READY and entry.name not in owned and not (new / entry.name).exists():
                os.rename(entry, new / entry.name)
    old = path.parent / new.name.replace(".new-", ".old-", 1)
    if path.exists() and _exchange(new, path):
        os.rename(new, old)  # ``new`` now holds the old set: rename it first, so it is never taken as ready
    else:
        if path.exists():
            os.rename(path, old)
        os.rename(new, path)
    (path / READY).unlink()
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one step (Linux ``renameat2``); False where the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def append_jsonl(path: Path | str, row: dict) -> None:
    """Append one JSON row as a single ``write`` call on an ``O_APPEND`` descriptor, then fsync.

    A process killed mid-write can at worst leave a truncated last line, which
    :func:`read_jsonl` skips, so every complete row survives. The file gets the umask's permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = ("\n" + json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path | str) -> list[dict]:
    """Read the complete rows of a JSON-lines file; blank and truncated lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
