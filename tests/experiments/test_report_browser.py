"""``report.html`` in a real Chromium (``tests/chromium.py``), as a colleague opens it: it
reads in a 1280 × 800 window and a narrower laptop one without scrolling sideways, each
sample row is the input and then every task in the run's order as label | prediction over
one key, a depth label and its prediction share one colour range, and the page says which
runs and steps it compares (issue 24)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from densetasks.engine.logs import SAMPLE_KEY_WIDTH, write_prediction_images
from densetasks.experiments.report import write_report
from densetasks.tasks.depth import Depth
from densetasks.tasks.normals import SurfaceNormals
from densetasks.tasks.semseg import SemanticSegmentation

from ..chromium import chromium

CLASSES = ["floor", "wall", "ceiling", "box", "sphere", "cylinder", "person"]
PRIMARY = {"semseg": "miou", "depth": "rmse", "normals": "mean"}
HIGHER = {"semseg": True, "depth": False, "normals": False}
HEIGHT, WIDTH = 48, 64


def sample_batch(tasks: list[str]) -> tuple[dict, dict]:
    """Two images with labels and predictions: depth labels ramp from 1 to 2 m left to right,
    the predictions from 2 to 8 m, so a label's right edge and its prediction's left edge
    are both 2 m (issue 24: the label and prediction bars had different ranges)."""
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.0, 1.0, WIDTH).expand(2, 1, HEIGHT, WIDTH)
    normals = torch.nn.functional.normalize(
        torch.randn(2, 3, HEIGHT, WIDTH, generator=generator), dim=1
    )
    batch = {
        "image": torch.rand(2, 3, HEIGHT, WIDTH, generator=generator),
        "semseg": torch.randint(0, 3, (2, HEIGHT, WIDTH), generator=generator),
        "depth": 1.0 + ramp,
        "normals": normals,
    }
    predictions = {
        "semseg": torch.randint(2, 7, (2, HEIGHT, WIDTH), generator=generator),
        "depth": 2.0 + 6.0 * ramp,
        "normals": normals.flip(-1),
    }
    return {"image": batch["image"], **{t: batch[t] for t in tasks}}, {
        t: predictions[t] for t in tasks
    }


def write_run(root: Path, name: str, tasks: list[str], architecture: str, value: float) -> Path:
    """A run directory as the engine writes it: config, test metrics, 40 logged steps in
    which two tasks have equal loss weights, and the sample pictures of its last evaluation."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"tasks": {task: {} for task in tasks}, "model": {"architecture": architecture}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    metrics = {task: {PRIMARY[task]: value} for task in tasks}
    stored = {
        "step": 40,
        "split": "test",
        "metrics": metrics,
        "higher_is_better": {task: {PRIMARY[task]: HIGHER[task]} for task in tasks},
        "primary": {task: PRIMARY[task] for task in tasks},
    }
    (run_dir / "metrics_test.json").write_text(json.dumps(stored))
    events = []
    for step in range(1, 41):
        weights = {task: 1.0 if task == "semseg" else 0.5 for task in tasks}
        losses = {task: 2.0 / step + index for index, task in enumerate(tasks)}
        events.append({"type": "train", "step": step, "losses": losses, "weights": weights})
        if step % 10 == 0:
            events.append({"type": "eval", "split": "val", "step": step, "metrics": metrics})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    all_tasks = {
        "semseg": SemanticSegmentation(num_classes=len(CLASSES), class_names=CLASSES),
        "depth": Depth(),
        "normals": SurfaceNormals(),
    }
    batch, predictions = sample_batch(tasks)
    folder = run_dir / "images" / "step_40"
    write_prediction_images(folder, {t: all_tasks[t] for t in tasks}, batch, predictions, count=2)
    return run_dir


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    tasks = ["semseg", "depth", "normals"]
    sweep = "balancer.name=uncertainty,balancer.weights.semseg=10,model.encoder=resnet18,seed=0"
    runs = [write_run(root, sweep, tasks, "hard_sharing", 0.5)]
    runs.append(write_run(root, "padnet", tasks, "padnet", 0.6))
    baselines = [write_run(root, f"stl_{task}", [task], "single_task", 0.4) for task in tasks]
    out = root / "report"
    write_report(runs, baselines, out)
    return out / "report.html"


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.mark.parametrize("width", [1280, 900])
def test_the_page_fits_the_window_without_sideways_scrolling(
    report_html, browser, width, tmp_path
) -> None:
    page = browser.new_page(viewport={"width": width, "height": 800})
    page.goto(report_html.as_uri())
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert scroll <= inner, f"{scroll} px wide in a {inner}-px window"
    for plot in page.query_selector_all("img.plot"):
        box = plot.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= inner
    page.screenshot(path=tmp_path / f"report_{width}.png")
    page.close()


def test_sample_rows_are_the_input_then_each_task_as_label_and_prediction_over_one_key(
    report_html, browser
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(report_html.as_uri())
    rows = page.evaluate(
        """() => [...document.querySelectorAll('.sample')].map(row =>
            [...row.querySelectorAll(':scope > figure')].map(f => f.dataset.task))"""
    )
    assert rows[:2] == [["input", "semseg", "depth", "normals"]] * 2  # the sweep run, 2 images
    assert ["input", "depth"] in rows and len(rows) == 2 * 5
    pairs = page.query_selector_all("figure.pair")
    assert len(pairs) == 2 * (3 + 3 + 3)
    for pair in pairs:
        label, prediction = pair.query_selector_all("img.picture")
        left, right = label.bounding_box(), prediction.bounding_box()
        assert left["y"] == right["y"] and left["x"] + left["width"] < right["x"]
        (key,) = pair.query_selector_all("img.key")
        assert key.bounding_box()["width"] == SAMPLE_KEY_WIDTH
        assert key.bounding_box()["y"] > left["y"] + left["height"] - 1  # under the pair
        caption = pair.query_selector("figcaption").inner_text()
        assert caption == f"{pair.get_attribute('data-task')}: label | prediction"
    page.close()


def test_a_depth_label_and_its_prediction_share_one_colour_range(report_html, browser) -> None:
    """2 m is the label's right edge and the prediction's left edge: one colour on the page."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(report_html.as_uri())
    label, prediction = page.evaluate(
        """() => {
            const pair = document.querySelector("figure.pair[data-task='depth']");
            const pixel = (img, x) => {
                const canvas = document.createElement("canvas");
                canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
                const context = canvas.getContext("2d");
                context.drawImage(img, 0, 0);
                return Array.from(context.getImageData(x, 0, 1, 1).data.slice(0, 3));
            };
            const [label, prediction] = pair.querySelectorAll("img.picture");
            return [pixel(label, label.naturalWidth - 1), pixel(prediction, 0)];
        }"""
    )
    assert label == prediction and label != [0, 0, 0]
    page.close()


def test_the_page_says_which_runs_steps_and_baselines_it_compares(report_html, browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(report_html.as_uri())
    summary = page.inner_text("p.summary")
    assert summary.startswith("Split: test. Runs: balancer.name=uncertainty")
    assert "padnet (padnet, step 40)" in summary
    assert "Single-task baselines: semseg: stl_semseg, depth: stl_depth" in summary
    captions = page.eval_on_selector_all(".caption", "nodes => nodes.map(n => n.innerText)")
    assert all("step 40" in caption for caption in captions)
    page.close()
