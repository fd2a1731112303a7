"""Stopping a training run cleanly when the cluster asks it to: SIGTERM, SIGINT, SIGUSR1.

Schedulers stop a job with SIGTERM and kill it seconds later (Slurm's ``KillWait``, 30 s by
default; a Kubernetes pod's grace period); Slurm's ``--signal=USR1@<seconds>`` warns before
the time limit; Ctrl-C is SIGINT. While :func:`stop_signals` is active, the first of these
only records the signal in a :class:`StopRequest` (and says so on standard error), which the
training loop reads between steps: the run finishes its step, writes ``last.pt`` and raises
:class:`TrainingStopped`. A second signal (of any of the three) raises
:class:`TrainingStopped` (``at_once``) wherever the main thread is:
every file the engine writes is replaced atomically, so an unfinished write leaves the
previous file, and the run resumes from the last checkpoint.

Data loader workers ignore these signals (:func:`ignore_stop_signals`, their
``worker_init_fn``): a scheduler signals every process of the job, and a worker that died
would break the step the main process is finishing.
"""

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
"""The signals that stop a run: schedulers' stop, Ctrl-C, Slurm's warning."""


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal. A :class:`KeyboardInterrupt`, as Ctrl-C is, so that code
    catching ``Exception`` does not swallow the request to stop.

    ``step`` and ``checkpoint``: the step the run stopped after and the checkpoint that holds
    it (``None`` when a second signal stopped it at once: the last checkpoint written
    stands). ``exit_status`` is the shell's convention for death by that signal, 128 + its
    number (143 for SIGTERM, 130 for SIGINT).
    """

    def __init__(self, signum: int, step: int | None = None, checkpoint: Path | None = None):
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(self.description)

    @property
    def at_once(self) -> bool:
        return self.checkpoint is None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def description(self) -> str:
        if self.at_once:
            return f"stopped at once by a second signal ({self.signal_name})"
        return f"stopped by {self.signal_name} after step {self.step} (saved {self.checkpoint})"


class StopRequest:
    """The first stop signal received (``signum``, 0 while none); a second one raises.

    With ``announce`` the first one prints a line on standard error (written straight to
    the file descriptor: a handler must not re-enter the buffered stream that the main
    thread may be writing)."""

    def __init__(self, announce: bool = True) -> None:
        self.signum = 0
        self.announce = announce

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:
            raise TrainingStopped(signum)
        self.signum = signum
        if self.announce:
            name = signal.Signals(signum).name
            line = f"densetasks: {name}: stopping after this step (a second signal stops at once)"
            os.write(2, (line + "\n").encode())


@contextmanager
def stop_signals(announce: bool = True) -> Iterator[StopRequest]:
    """A :class:`StopRequest` that the stop signals set while the block runs; the previous
    handlers are back afterwards. Outside the main thread (where Python cannot install
    handlers) the request is never set and signals keep their handlers."""
    request = StopRequest(announce)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request.handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A data loader worker's ``worker_init_fn``: the main process decides when to stop
    (torch's own handler would make a worker die of a SIGTERM that the scheduler sends to
    every process of the job)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
