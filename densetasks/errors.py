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
