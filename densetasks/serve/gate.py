"""Bounded concurrency: a few predictions at a time, a short queue, and "busy" beyond it.

A prediction holds the CPU (or GPU) and memory for its whole length, so a burst of requests
must wait in line rather than all run at once, and a line longer than ``queue`` is refused
at the door (HTTP 503 with ``Retry-After``) instead of growing until the machine runs out
of memory. The gate uses threading primitives: predictions run in worker threads, and the
limits then hold whatever event loop the app is served from.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Busy(Exception):
    """Every slot and every queue place is taken."""


class Gate:
    """At most ``concurrency`` holders of :meth:`slot`, and ``queue`` more admitted waiting."""

    def __init__(self, concurrency: int = 1, queue: int = 8) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError(f"concurrency must be >= 1 and queue >= 0, got {concurrency}, {queue}")
        self.capacity = concurrency + queue
        self._admitted = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)

    @property
    def admitted(self) -> int:
        """Requests inside the gate now, running or waiting."""
        return self._admitted

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Enter the gate for the length of a request, or raise :class:`Busy` when full."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise Busy
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait (in a worker thread) for one of the ``concurrency`` prediction slots."""
        with self._slots:
            yield
