"""The top-level error handling both command lines share: one line on stderr for every failure a user
can cause, a traceback only with ``--debug``, and a Ctrl-C that returns within seconds."""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import signal
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

INTERRUPTED = "interrupted; run the same command to resume"
EXIT_INTERRUPTED = 130
CTRL_C_GRACE_S = 3.0  # after Ctrl-C, seconds to unwind (threads finishing a step) before a hard exit

# frame locals that name the file a library was reading when it failed (torch.load, pandas, numpy, open)
_FILE_LOCALS = ("f", "file", "fname", "filename", "filepath_or_buffer", "path", "p")
_PROJECT = ("blocks", "latency", "search", "donna", "baselines")


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (``prog: error: ...; see prog --help``)."""

    def error(self, message: str) -> NoReturn:
        """Prints the one line and exits with status 2."""
        print(f"{self.prog.split()[0]}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)

    def parse_or_status(self, argv: list[str] | None) -> argparse.Namespace | int:
        """The parsed arguments, or the exit status argparse chose (2 after a usage error, 0 after ``--help``)."""
        try:
            return self.parse_args(argv)
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else 2


def _first_line(err: BaseException, limit: int = 1000) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


def _reason(err: BaseException) -> str:
    """The first sentence of a library's message (torch's go on with advice that does not apply here)."""
    text = _first_line(err, 160)
    head, dot, _ = text.partition(". ")
    return head + ("." if dot else "")


def _file_in_traceback(tb: TracebackType | None) -> str | None:
    """The innermost existing file a frame of ``tb`` was reading (a corrupt file's name)."""
    found = None
    while tb is not None:
        for name in _FILE_LOCALS:
            value = tb.tb_frame.f_locals.get(name)
            if isinstance(value, (str, Path)) and str(value) and os.path.isfile(value):
                found = str(value)
                break
            if hasattr(value, "name") and isinstance(getattr(value, "name", None), str) and \
                    os.path.isfile(value.name):
                found = value.name
                break
        tb = tb.tb_next
    return found


def _raised_in_project(tb: TracebackType | None) -> bool:
    """Whether the innermost frame of ``tb`` is code of this project (a deliberate error message)."""
    last = None
    while tb is not None:
        last, tb = tb.tb_frame, tb.tb_next
    return last is not None and str(last.f_globals.get("__name__", "")).split(".")[0] in _PROJECT


def _corrupt_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
                                        json.JSONDecodeError, UnicodeDecodeError]
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        types += [pandas.errors.ParserError, pandas.errors.EmptyDataError]
    return tuple(types)


def _os_line(err: OSError) -> str:
    where = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    what = err.strerror or _first_line(err)
    hint = {errno.ENOSPC: "free some disk space, then run the same command to resume",
            errno.EACCES: "make it writable or choose another folder",
            errno.EROFS: "the file system is read-only; choose another folder",
            errno.ENOTDIR: "a file is in the way of a folder; pass a folder",
            errno.ENOENT: "check the path (a stage may not have run yet)"}.get(err.errno or 0)
    line = f"{what}: {where}" if where else what
    return f"{line}; {hint}" if hint else line


def describe(err: BaseException) -> tuple[str, int]:
    """The one line and the exit status for an exception that reached the command line."""
    tb = err.__traceback__
    if isinstance(err, OSError) and err.filename is None and err.errno in (None, errno.EINVAL):
        path = _file_in_traceback(tb)  # torch's zip reader says "Invalid argument" for a truncated file
        if path:
            return (f"{path} is corrupt, truncated or not the expected kind of file ({_reason(err)}); delete or "
                    "replace it and run the same command again", 2)
    if isinstance(err, OSError):
        return _os_line(err), 2
    if isinstance(err, ValueError) and _raised_in_project(tb):
        return _first_line(err), 2
    path = _file_in_traceback(tb)
    if path and (isinstance(err, _corrupt_types()) or not _raised_in_project(tb)):
        return (f"{path} is corrupt, truncated or not the expected kind of file ({type(err).__name__}: "
                f"{_reason(err)}); delete or replace it and run the same command again", 2)
    if isinstance(err, (ValueError, *_corrupt_types())):
        return _first_line(err), 2
    if isinstance(err, MemoryError):
        return "out of memory; use a smaller architecture, input size or batch size", 2
    return (f"unexpected {type(err).__name__}: {_reason(err)} (run again with --debug for the traceback; "
            "a damaged file in the folder, or a bug to report)", 1)


class _CtrlC:
    """SIGINT raises ``KeyboardInterrupt`` as usual, and also arms a timer: if the process has not unwound
    within ``CTRL_C_GRACE_S`` (worker threads still running their queued jobs), it prints the line and
    exits at once. Every stage writes atomically, so what it leaves is what a kill leaves: resumable."""

    def __init__(self, prog: str) -> None:
        self.prog, self.previous, self.reported = prog, None, False

    def _exit_now(self) -> None:
        import multiprocessing

        if not self.reported:
            self.reported = True
            print(f"{self.prog}: {INTERRUPTED}", file=sys.stderr, flush=True)
        for child in multiprocessing.active_children():  # process-pool workers would outlive us, unlocked
            child.terminate()
        os._exit(EXIT_INTERRUPTED)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        timer = threading.Timer(CTRL_C_GRACE_S, self._exit_now)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def run_guarded(prog: str, func: Callable[[], int], debug: bool = False) -> int:
    """Runs ``func`` and turns whatever it raises into one line on stderr and an exit status.

    Args:
        prog: the command's name, the prefix of the line.
        func: the command; returns its exit status.
        debug: re-raise instead (the full traceback), for bug reports.

    Returns:
        ``func``'s status; 2 for bad input, a bad or corrupt file and OS errors; 130 after Ctrl-C;
        1 for anything unexpected.
    """
    ctrl_c = _CtrlC(prog)
    with ctrl_c:
        try:
            return func()
        except KeyboardInterrupt:
            if debug:
                raise
            ctrl_c.reported = True
            print(f"{prog}: {INTERRUPTED}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            return 1
        except Exception as err:
            if debug:
                raise
            line, status = describe(err)
            print(f"{prog}: error: {line}", file=sys.stderr)
            return status


# ---- argument types: a bad value is refused while parsing, before any work -------------------------------

def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range; it must be {bound}")
        return value

    parse.__name__ = "integer"
    return parse


def finite_float(low: float = 0.0, high: float | None = None, low_open: bool = True) -> Callable[[str], float]:
    """An argparse ``type``: a finite number above ``low`` (or at least it, ``low_open=False``), at most ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value <= low if low_open else value < low
        if value != value or value in (float("inf"), float("-inf")) or too_low or (high is not None and value > high):
            bound = f"{'above' if low_open else 'at least'} {low:g}" + (f" and at most {high:g}" if high else "")
            raise argparse.ArgumentTypeError(f"{text} is out of range; it must be a finite number {bound}")
        return value

    parse.__name__ = "number"
    return parse


def space_arg(text: str) -> str:
    """An argparse ``type``: a shipped space name or a space JSON file that parses."""
    from blocks import get_space

    try:
        get_space(text)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
        kind = "" if isinstance(err, ValueError) else f"{type(err).__name__}: "
        raise argparse.ArgumentTypeError(f"{text}: not a valid search space ({kind}{err})") from None
    except OSError as err:
        raise argparse.ArgumentTypeError(f"{text}: {err.strerror or err}") from None
    return text
