"""Draw the four split points of network fission (Hickson et al., supplementary Sec. 1.1) as
``docs/images/fission_splits.png``, from the networks themselves: a block is drawn shared
when the model built with that split point keeps it in its shared modules.

::

    python benchmarks/network_fission/figure.py [--out docs/images/fission_splits.png]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from densetasks.models import create_model
from densetasks.models.architectures.fission import FUSED, SHARED_STAGES, STAGES

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"normals": 3, "depth": 1}
BLOCKS = ("encoder + eASPP", *STAGES, "head")
SHARED, OWN = "#4c72b0", ("#dd8452", "#55a868")
"""Colours: shared by every task; each task's own."""
WIDTH, GAP, HEIGHT = 1.6, 0.35, 0.5


def shared_blocks(split: str) -> list[bool]:
    """Per block of :data:`BLOCKS`: does every task run through it at ``split``?"""
    model = create_model("fission", TASKS, encoder="tiny", decoder_channels=8, split=split)
    return [True, *(stage in model.decoder for stage in STAGES), FUSED in model.heads]


def draw(out: Path) -> None:
    splits = list(SHARED_STAGES)
    figure, axes = plt.subplots(len(splits), 1, figsize=(8.5, 1.6 * len(splits)))
    for axis, split in zip(axes, splits, strict=True):
        shared = shared_blocks(split)
        first_own = shared.index(False) if False in shared else len(BLOCKS)
        for index, (name, is_shared) in enumerate(zip(BLOCKS, shared, strict=True)):
            x = index * (WIDTH + GAP)
            rows = (
                [(0.0, SHARED, name)]
                if is_shared
                else [
                    (0.45, OWN[0], f"{name} (normals)"),
                    (-0.45, OWN[1], f"{name} (depth)"),
                ]
            )
            for y, colour, label in rows:
                box = FancyBboxPatch(
                    (x, y - HEIGHT / 2),
                    WIDTH,
                    HEIGHT,
                    boxstyle="round,pad=0.03",
                    facecolor=colour,
                    edgecolor="black",
                    linewidth=0.6,
                )
                axis.add_patch(box)
                axis.text(
                    x + WIDTH / 2, y, label, ha="center", va="center", fontsize=7, color="white"
                )
            if index:
                start = (x - GAP, 0.0 if shared[index - 1] else None)
                for y in [0.0] if is_shared else [0.45, -0.45]:
                    y0 = start[1] if start[1] is not None else y
                    axis.annotate(
                        "", (x, y), (x - GAP, y0), arrowprops={"arrowstyle": "->", "linewidth": 0.8}
                    )
        end = len(BLOCKS) * (WIDTH + GAP)
        if shared[-1]:
            for (task, channels), y, colour in zip(TASKS.items(), (0.45, -0.45), OWN, strict=True):
                arrow = {"arrowstyle": "->", "linewidth": 0.8, "color": colour}
                axis.annotate("", (end + 0.4, y), (end - GAP, 0.0), arrowprops=arrow)
                axis.text(end + 0.5, y, f"{task} ({channels} ch)", fontsize=7, va="center")
        proposed = " (proposed, default)" if split == "mid" else ""
        axis.set_title(
            f"{split}{proposed}: {first_own} of {len(BLOCKS)} blocks shared",
            fontsize=9,
            loc="left",
        )
        axis.set_xlim(-0.2, end + 1.6)
        axis.set_ylim(-0.8, 0.8)
        axis.axis("off")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=150)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "fission_splits.png")
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
