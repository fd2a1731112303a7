"""The page of ``densetasks serve`` in a real Chromium, driven by Playwright.

Chromium is Debian's (``apt-get install chromium``; Playwright's own browser download is not
used). The test opens the page served by uvicorn on 127.0.0.1, uploads an image, waits for
every task's picture, paints two regions with two tasks on a CompositeTasking run, runs it
and compares the composite canvas pixel by pixel, then compares two runs side by side.
Screenshots of each step go to the test's temporary folder (``DENSETASKS_SCREENSHOTS``
names a folder to copy them to, e.g. ``docs/images``).
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import COMPOSITE_TASKS, SERVE_EXTRA, serving

pytest.importorskip("uvicorn", reason=SERVE_EXTRA)
serve = pytest.importorskip("densetasks.serve", reason=SERVE_EXTRA)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is missing (pip install playwright)"
)

SIZE = 64
TIMEOUT_MS = 20_000


def photo(path: Path) -> Path:
    """A 64×64 test picture: a bright square on a gradient."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    pixels = np.stack([x * 4, y * 4, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    pixels[16:40, 20:44] = (240, 220, 40)
    Image.fromarray(pixels).save(path)
    return path


def canvas_pixels(page, selector: str) -> np.ndarray:
    """The RGBA pixels of a canvas as drawn, ``uint8 [H, W, 4]``."""
    width, height, data = page.evaluate(
        """(selector) => {
            const canvas = document.querySelector(selector);
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            return [canvas.width, canvas.height, Array.from(pixels.data)];
        }""",
        selector,
    )
    return np.asarray(data, dtype=np.uint8).reshape(height, width, 4)


def drag(page, selector: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press, move and release the mouse over a canvas, in image-relative coordinates."""
    box = page.locator(selector).bounding_box()
    points = [
        (box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in (start, end)
    ]
    page.mouse.move(*points[0])
    page.mouse.down()
    page.mouse.move(*points[1], steps=8)
    page.mouse.up()


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_upload_paint_run_and_compare(runs, browser, tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    image = photo(tmp_path / "photo.png")
    with serving(serve.create_app(runs)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
        page.select_option("#run", "ctn")
        page.set_input_files("#file", str(image))
        for task in COMPOSITE_TASKS:
            page.wait_for_selector(
                f".row[data-run='ctn'] canvas[data-task='{task}'][data-ready='1']",
                timeout=TIMEOUT_MS,
            )
        page.locator(".row[data-run='ctn'] canvas[data-task='depth']").hover()
        assert " m" in page.inner_text("#hover")
        page.screenshot(path=shots / "serve_tasks.png", full_page=True)

        page.click("#run-palette")  # an empty palette: no task anywhere, all black
        page.wait_for_selector("#composite[data-version='1']", timeout=TIMEOUT_MS)
        blank = canvas_pixels(page, "#composite")
        assert not blank[..., :3].any()

        page.click("#brushes button[data-brush='0']")  # semseg
        drag(page, "#paint-overlay", (0.1, 0.15), (0.4, 0.15))
        page.click("#brushes button[data-brush='1']")  # depth
        drag(page, "#paint-overlay", (0.55, 0.7), (0.9, 0.7))
        page.click("#run-palette")
        page.wait_for_selector("#composite[data-version='2']", timeout=TIMEOUT_MS)
        painted = canvas_pixels(page, "#composite")
        overlay = canvas_pixels(page, "#paint-overlay")  # opaque where a task is painted
        inside = overlay[..., 3] > 0
        colours = {tuple(colour) for colour in overlay[inside][:, :3].tolist()}
        assert len(colours) == 2 and 0.1 < inside.mean() < 0.6, (colours, inside.mean())
        changed = (painted[..., :3] != blank[..., :3]).any(axis=-1)
        assert not changed[~inside].any(), "the composite changed outside the painted region"
        assert changed[inside].mean() > 0.9, changed[inside].mean()
        page.screenshot(path=shots / "serve_palette.png", full_page=True)

        page.select_option("#compare", "hard")
        for run, task in (("ctn", "normals"), ("hard", "semseg"), ("hard", "depth")):
            page.wait_for_selector(
                f".row[data-run='{run}'] canvas[data-task='{task}'][data-ready='1']",
                timeout=TIMEOUT_MS,
            )
        page.screenshot(path=shots / "serve_compare.png", full_page=True)
        assert errors == []
    copy_to = os.environ.get("DENSETASKS_SCREENSHOTS")
    if copy_to:
        for shot in shots.iterdir():
            shutil.copy(shot, Path(copy_to) / shot.name)


def test_the_token_link_opens_the_page_and_its_requests(runs, browser) -> None:
    token = "a-token-for-the-browser-test"
    with serving(serve.create_app(runs, token=token)) as url:
        page = browser.new_page()
        refused = page.goto(url)
        assert refused.status == 401 and "needs its token" in page.inner_text("body")
        page.goto(f"{url}/?token={token}")
        page.wait_for_selector("body[data-ready='1']", timeout=TIMEOUT_MS)
        assert page.url == f"{url}/"  # the token left the address bar
        assert page.locator("#run option").count() == len(runs)
        cookies = page.context.cookies()
        assert [(c["name"], c["httpOnly"]) for c in cookies] == [("densetasks_token", True)]
