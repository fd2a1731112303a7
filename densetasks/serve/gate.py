"""Bounded work: a few predictions at a time on threads of their own, a short queue, "busy".

A prediction holds the CPU (or GPU) and memory for its whole length, so a burst of requests
must wait in line rather than all run at once, and a line longer than ``queue`` is refused
at the door (HTTP 503 with ``Retry-After``) instead of growing until the machine runs out
of memory.

The work runs on the gate's own ``concurrency`` threads, never on the web framework's pool
of 40: every thread that calls torch keeps an OpenMP team and malloc arenas of its own, so
with the pool each burst reached new threads and the server's memory grew burst after burst
(``docs/serve.md``, "Memory"). Waiting requests wait as coroutines, holding no thread.
"""

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Every slot and every queue place is taken."""


class Gate:
    """At most ``concurrency`` calls running on the gate's threads and ``queue`` more admitted
    waiting; :meth:`admit` beyond that raises :class:`Busy`."""

    def __init__(self, concurrency: int = 1, queue: int = 8) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError(f"concurrency must be >= 1 and queue >= 0, got {concurrency}, {queue}")
        self.capacity = concurrency + queue
        self._admitted = 0
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(concurrency, thread_name_prefix="densetasks-serve")

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

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` on one of the gate's threads, once one is free (in order)."""
        return await asyncio.get_running_loop().run_in_executor(self._workers, work, *args)

    def close(self) -> None:
        """Let the running and queued work finish, then stop the threads."""
        self._workers.shutdown(wait=True)
