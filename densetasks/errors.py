"""Errors that densetasks raises for bad input.

Every error names the thing that is wrong (a file, a config key, a tensor shape) so that
the command line can print it as one clear line.
"""


class DenseTasksError(Exception):
    """Base class: the command line prints these as one line (no traceback)."""


class DataError(DenseTasksError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class ConfigError(DenseTasksError):
    """A configuration key is unknown, mistyped or out of range."""


class TrainingError(DenseTasksError):
    """Training cannot go on (for example a task's loss became NaN)."""


class DiskFullError(DenseTasksError):
    """A file cannot be written for want of room: the disk is full (``ENOSPC``), a quota is
    used up (``EDQUOT``) or the file would pass the process's size limit (``EFBIG``)."""


class DenseTasksWarning(UserWarning):
    """Something the user should know that does not stop the command (the command line
    prints it as one line): for example a damaged checkpoint replaced by the previous one."""


def own_message(error: BaseException) -> str:
    """The message ``error`` was raised with, without the traceback that torch's DataLoader
    puts before it when it re-raises an error from a worker process (``Caught DataError in
    DataLoader worker process 0. Original Traceback ... DataError: <message>``)."""
    text = str(error)
    name = f"{type(error).__module__}.{type(error).__qualname__}: "
    if text.startswith("Caught ") and name in text:
        return text.rsplit(name, 1)[1].strip()
    return text
