"""The README's "A tour" runs as written, in order, each command reading what the last wrote.

The commands are taken from the fenced block under ``## A tour`` in ``README.md`` and run
through :func:`densetasks.cli.main.main` in a temporary folder (with ``configs/`` copied in),
at a tiny scale: :func:`tiny` cuts ``data synth`` to 4 images of 32x32 and appends
``--set`` overrides to ``train`` (2 steps, batches of 2, 32x32 crops). Everything else is
the README's text. ``serve`` starts a web server, so it is only parsed and its run
directories checked.

The pictures in ``docs/images/`` come from this test at a longer scale::

    DENSETASKS_TOUR_STEPS=60 DENSETASKS_TOUR_SYNTH="48 96x96" \
        DENSETASKS_DOCS_IMAGES=docs/images python -m pytest -q tests/test_readme_tour.py

writes ``sheet_example.png`` (the ``predict`` sheet) and ``report_example.png`` (``report.html``
in headless Chromium at 1280 × 800, from the loss weights to the first sample rows) there.
"""

import json
import os
import shlex
import shutil
from pathlib import Path

from PIL import Image

from densetasks.cli.main import build_parser, main

from .chromium import chromium

ROOT = Path(__file__).resolve().parents[1]

STEPS = int(os.environ.get("DENSETASKS_TOUR_STEPS", "2"))
"""Training steps of every run of the tour (2 in CI; more for the pictures of the docs)."""

TINY_TRAIN = [
    f"train.steps={STEPS}",
    f"train.eval_every={max(2, STEPS // 4)}",
    f"train.checkpoint_every={STEPS}",
    "train.log_every=1",
    "train.warmup_steps=0",
    "data.batch_size=2",
    "data.workers=0",
    "data.crop_size=[32, 32]",
    "eval.num_images=1",
]
"""``--set`` overrides appended to every ``train`` command of the tour (the last one wins)."""

_COUNT, _SIZE = os.environ.get("DENSETASKS_TOUR_SYNTH", "4 32x32").split()
TINY_SYNTH = {"--n": _COUNT, "--size": _SIZE}
"""``data synth`` options replaced in the tour's commands (4 images of 32x32 in CI)."""


def tour_commands(readme: str) -> list[list[str]]:
    """The argument lists of the ``densetasks`` commands in the block under ``## A tour``.

    Lines ending in ``\\`` continue on the next; ``#`` starts a comment (as in the shell).
    """
    section = readme.split("\n## A tour\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "densetasks", f"not a densetasks command: {line}"
            commands.append(words[1:])
    return commands


def tiny(command: list[str]) -> list[str]:
    """``command`` at the test's scale (see the module docstring)."""
    if command[0] == "train":
        return [*command, *(word for item in TINY_TRAIN for word in ("--set", item))]
    if command[:2] == ["data", "synth"]:
        return [
            TINY_SYNTH.get(previous, word) if previous in TINY_SYNTH else word
            for previous, word in zip(["", *command], command, strict=False)
        ]
    return command


def written(command: list[str]) -> list[Path]:
    """What ``command`` must leave behind for the commands after it to read."""
    args = build_parser().parse_args(command)
    if command[0] == "data":
        return [args.out / "dataset.json", args.out / "splits" / f"{args.split}.txt"]
    if command[0] == "train":
        return [args.out / "checkpoints" / "best.pt", args.out / "metrics_test.json"]
    if command[0] == "eval":
        return [args.run_dir / f"metrics_{args.split}.json"]
    if command[0] == "predict":
        return [args.out / f"{image.stem}_sheet.png" for image in args.images]
    if command[0] == "report":
        return [args.out / name for name in ("report.json", "report.md", "report.html")]
    return []


def test_the_tour_is_found_and_ends_with_serve() -> None:
    commands = tour_commands((ROOT / "README.md").read_text())
    names = [command[0] for command in commands]
    assert names[:3] == ["data"] * 3 and "train" in names and names[-1] == "serve"
    assert tiny(["data", "synth", "--out", "d", "--n", "256"]) == [
        "data", "synth", "--out", "d", "--n", TINY_SYNTH["--n"]
    ]  # fmt: skip


def test_the_readme_tour_runs_in_order(tmp_path: Path, monkeypatch, one_thread) -> None:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    *commands, serve = tour_commands((ROOT / "README.md").read_text())
    for command in commands:
        assert main(tiny(command)) == 0, command
        missing = [path for path in written(command) if not path.is_file()]
        assert not missing, f"{shlex.join(command)} did not write {missing}"
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["baselines"]) == {"semseg", "depth", "normals"}
    assert not report["runs"][0]["delta_m_percent"]["missing_baselines"]
    served = build_parser().parse_args(serve)
    assert all((run_dir / "checkpoints" / "best.pt").is_file() for run_dir in served.run_dirs)
    if os.environ.get("DENSETASKS_DOCS_IMAGES"):
        write_docs_images(tmp_path, ROOT / os.environ["DENSETASKS_DOCS_IMAGES"])


def write_docs_images(tour: Path, folder: Path) -> None:
    """The tour's prediction sheet, and its report page as a colleague sees it: Chromium at
    1280 × 800, 1400 pixels from the loss weights plot on."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(next((tour / "predictions").glob("*_sheet.png")), folder / "sheet_example.png")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto((tour / "report" / "report.html").as_uri())
        top = page.evaluate("document.querySelectorAll('h2')[1].getBoundingClientRect().top")
        clip = {"x": 0, "y": top - 16, "width": 1280, "height": 1400}
        page.screenshot(path=tour / "report.png", full_page=True, clip=clip)
    Image.open(tour / "report.png").convert("RGB").save(
        folder / "report_example.png", optimize=True
    )
