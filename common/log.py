"""The run's log: ``run.log`` in the run folder through ``logging``, and the warnings of the libraries (scipy,
scikit-learn, torch, numpy, ours) turned into one-line log messages instead of raw ``file:line`` dumps."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGES = ("donna", "latency", "search", "blocks", "baselines", "common")  # the project's logger trees
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FILE_ONLY = {"file_only": True}  # ``log.info(text, extra=FILE_ONLY)``: the run.log gets it, the console does not

log = logging.getLogger("common.log")
for _name in PACKAGES:  # a library user who configured no logging sees nothing of ours (not logging's last resort)
    logging.getLogger(_name).addHandler(logging.NullHandler())

# what a warning means for the run, by category name (the library's own text follows)
WARNING_HINTS = {
    "ConstantInputWarning": "a correlation got a constant input; it is reported as NaN (undefined), not 0",
    "ConvergenceWarning": "a scikit-learn fit did not converge; its numbers may be off",
    "TracerWarning": "the ONNX export traced a Python value as a constant",
    "OnnxExporterWarning": "the ONNX export changed something on the way",
    "RuntimeWarning": "a numeric problem (NaN, overflow or an empty mean)",
}


class ConsoleHandler(logging.Handler):
    """Writes records to stdout through ``tqdm.write``: an open progress bar is cleared, the line written and
    the bar redrawn, all under tqdm's lock, so log lines and bars (from any thread) never cut into each other.

    Stdout, as the commands' other progress lines: stderr stays for the one line of an error. In a forked
    worker process (which holds copies of the parent's bars) the line is written plainly.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.pid = os.getpid()
        self.addFilter(lambda record: not getattr(record, "file_only", False))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if os.getpid() != self.pid:
                sys.stdout.write(line + "\n")
                return
            from tqdm import tqdm

            tqdm.write(line, file=sys.stdout)
        except Exception:  # noqa: BLE001 (logging's own convention: a broken console never stops the run)
            self.handleError(record)


def warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int) -> str:
    """One line for a warning: where it came from, what it means for the run (when known) and its text."""
    origin = (category.__module__ or "").split(".")[0]
    origin = "python" if origin == "builtins" else origin
    text = " ".join(str(message).split())  # one line, whatever the library put in it
    hint = WARNING_HINTS.get(category.__name__)
    where = f"{Path(filename).name}:{lineno}"
    return f"{origin} {category.__name__} at {where}: " + (f"{hint} ({text})" if hint else text)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` while a run logs: the warning becomes one WARNING record of ``<package>.warnings``
    (the package of ours whose code it points at, else ``donna``)."""
    top = next((part for part in reversed(Path(filename).parts[:-1]) if part in PACKAGES), "donna")
    name = f"{top}.warnings"
    logging.getLogger(name).warning(warning_line(message, category, filename, lineno))


@contextlib.contextmanager
def run_logging(log_file: str | Path | None, command: str = "") -> Iterator[None]:
    """For the ``with`` block: the project's loggers write INFO and above to ``log_file`` (appended, with
    timestamps; created with the user's umask like any plain file) and to the console, and warnings become
    one-line log records. Leaving the block detaches everything, so calls can nest or repeat in one process.

    Args:
        log_file: the run's ``run.log``; None logs to the console only (e.g. the run folder does not exist).
        command: the command line, written as the first line of this call's part of the log.
    """
    handlers: list[logging.Handler] = [ConsoleHandler()]
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")  # open(): mode 0o666 & ~umask
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
        file_handler.setLevel(logging.INFO)
        handlers.append(file_handler)
    loggers = [logging.getLogger(name) for name in PACKAGES]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        for handler in handlers:
            logger.addHandler(handler)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            if command:
                log.info("%s (pid %d)", command, os.getpid(), extra=FILE_ONLY)
            yield
    except BaseException as err:
        reason = "interrupted" if isinstance(err, KeyboardInterrupt) else \
            f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        log.error("stopped after %.0f s: %s", time.perf_counter() - start, reason, extra=FILE_ONLY)
        raise
    else:
        log.info("finished in %.0f s", time.perf_counter() - start, extra=FILE_ONLY)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
            for handler in handlers:
                logger.removeHandler(handler)
        for handler in handlers:
            handler.close()
