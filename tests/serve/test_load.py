"""A small load test of ``densetasks serve`` against 127.0.0.1: bursts of 50 concurrent
predict requests on a tiny run, each answered (200) or refused by the queue (503), never an
error 500, within a time bound, and the server's memory stable from one burst to the next.

The server runs in this process (uvicorn in a thread), so its memory is this process's RSS.
"""

import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import SERVE_EXTRA, serving

httpx = pytest.importorskip("httpx", reason=SERVE_EXTRA)
serve = pytest.importorskip("densetasks.serve", reason=SERVE_EXTRA)


REQUESTS = 50
BURSTS = 2
TIME_BOUND_S = 60.0
RSS_BOUND_MB = 150.0
"""Allowed RSS growth from after the warm-up to after the last burst (allocator slack)."""


def rss_mb() -> float:
    """This process's resident memory in MB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def image_bytes() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def burst(url: str, data: bytes) -> list[int]:
    """``REQUESTS`` predict requests at once, one thread each; their status codes."""

    def one(_: int) -> int:
        files = {"image": ("photo.png", data, "image/png")}
        response = httpx.post(f"{url}/api/predict", data={"run": "hard"}, files=files, timeout=30)
        return response.status_code

    with ThreadPoolExecutor(REQUESTS) as pool:
        return list(pool.map(one, range(REQUESTS)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")
def test_bursts_are_answered_or_refused_and_memory_stays_flat(runs) -> None:
    data = image_bytes()
    app = serve.create_app(runs, concurrency=1, queue=8)
    with serving(app) as url:
        for _ in range(5):  # warm-up: allocator, thread pool, first-call caches
            assert httpx.post(
                f"{url}/api/predict", data={"run": "hard"}, files={"image": ("p", data)}
            ).is_success
        before = rss_mb()
        started = time.monotonic()
        statuses = [status for _ in range(BURSTS) for status in burst(url, data)]
        elapsed = time.monotonic() - started
        after = rss_mb()
    answered, refused = statuses.count(200), statuses.count(503)
    print(
        f"\nload: {BURSTS} x {REQUESTS} concurrent requests in {elapsed:.1f} s: "
        f"{answered} answered, {refused} refused (503); RSS {before:.0f} -> {after:.0f} MB"
    )
    assert answered + refused == len(statuses), sorted(set(statuses))
    assert answered >= BURSTS * 9  # at least one running and eight queued per burst
    assert elapsed < TIME_BOUND_S
    assert after - before < RSS_BOUND_MB
    assert app.state.gate.admitted == 0
