"""The command line's errors, and how any error becomes one line and an exit status."""

from __future__ import annotations

from typing import Any


class CLIError(Exception):
    """A problem reported as one line without a traceback; ``code`` is the exit status."""

    code = 1


class UsageError(CLIError, ValueError):
    """A bad option or combination of options, or a named file that is not there: exit 2."""

    code = 2


class RunError(CLIError):
    """A failure with good options: a corrupt file, missing data, a diverged run: exit 1."""

    code = 1


def explain(exc: BaseException) -> tuple[int, str]:
    """Exit status and one line for an error that ended a command."""
    from tinycnn.backend import DeviceError
    from tinycnn.data import DatasetFormatError, DatasetNotFoundError

    if isinstance(exc, CLIError):
        return exc.code, str(exc)
    if isinstance(exc, DatasetNotFoundError):
        return 1, data_advice(exc)
    if isinstance(exc, DatasetFormatError):
        return 1, f"{exc}"
    if isinstance(exc, DeviceError):
        return 1, f"{exc} ('tinycnn info' says more)"
    if isinstance(exc, MemoryError):
        return 1, ("out of memory: use a smaller --batch-size, model or input, or close other "
                   "programs")
    if isinstance(exc, FloatingPointError):
        return 1, f"a computation overflowed ({exc}): lower --lr"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return 1, f"{exc.strerror or exc}{where}"
    return 1, (f"unexpected {type(exc).__name__}: {exc}. This is a bug in tinycnn: run again "
               "with --debug and report the traceback")


def data_advice(exc: Any) -> str:
    """One line for a :class:`DatasetNotFoundError`, in the command line's terms."""
    dataset = getattr(exc, "dataset", None)
    folder = getattr(exc, "folder", None)
    missing = ", ".join(getattr(exc, "missing", [])) or "its files"
    failed = getattr(exc, "download_error", None)
    if dataset is None or folder is None:
        return str(exc).splitlines()[0]
    if failed is not None:
        reason = str(getattr(failed, "attempts", failed)).splitlines()[-1].strip()
        return (f"downloading {dataset} into {folder} failed (last attempt: {reason}); check "
                f"the connection and run again, or fetch it elsewhere with 'tinycnn download "
                f"{dataset}' and copy {missing} into {folder}")
    return (f"{dataset} not found: {missing} missing in {folder}; add --download to fetch "
            f"it, run 'tinycnn download {dataset} --data-dir DIR', or point --data-dir "
            f"(or TINYCNN_DATA) at the folder that holds it")
