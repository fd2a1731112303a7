"""Task: everything about one kind of per-pixel output (see ``base.Task``)."""

from densetasks.tasks.base import Likelihood, Meaning, Task
from densetasks.tasks.registry import TASK_NAMES, TASKS, create_task

__all__ = ["TASKS", "TASK_NAMES", "Likelihood", "Meaning", "Task", "create_task"]
