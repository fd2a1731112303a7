"""Output adapters: from what an architecture returns to what each task's loss reads.

The identity adapter (:class:`~densetasks.models.base.OutputAdapter`) is the default. A
CompositeTasking network (Popovic et al., CVPR 2021) returns one shared 3-channel output
conditioned per pixel by a Task Palette; :class:`CompositeAdapter` turns it into every task's
raw output with ``Task.from_composite`` (Sec. 3.3) and supervises each task only where the
palette asks for it. The baselines of that paper (STN, MHN, MN) return one output per task and
read the palette only for where to supervise: :class:`PaletteMaskAdapter`.

``from_composite`` works on the *raw* 3-channel output: the authors' "sigmoid at the end" is
applied by each task (inside ``from_composite`` for the class quasi-logits, in the loss and
``decode`` for the binary maps), never by the model.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from densetasks.data.palettes import ALL_TASKS
from densetasks.models.base import AdaptedOutputs, OutputAdapter


class CompositeAdapter(OutputAdapter):
    """``{"composite": [B, 3, H, W]}`` (and ``"composite@tag"``) -> every task's output.

    Task ``i`` (the order of the model's tasks, as in its palette table) is supervised and
    evaluated where ``conditions[palette] == i``.
    """

    def __init__(self, palette: str = "palette", output: str = "composite") -> None:
        self.palette = palette
        self.output = output

    def __call__(
        self,
        outputs: Mapping[str, torch.Tensor],
        tasks: Mapping[str, Any],
        conditions: Mapping[str, torch.Tensor],
    ) -> AdaptedOutputs:
        adapted: dict[str, torch.Tensor] = {}
        for key, value in outputs.items():
            base, separator, tag = key.partition("@")
            if base != self.output:
                raise ValueError(
                    f"a composite model returns {self.output!r} (and {self.output!r}@tag) "
                    f"outputs only, got {key!r}"
                )
            for name, task in tasks.items():
                adapted[f"{name}{separator}{tag}"] = task.from_composite(value)
        return AdaptedOutputs(adapted, palette_masks(conditions[self.palette], tasks))


def palette_masks(
    palette: torch.Tensor, tasks: Iterable[str], ids: Mapping[str, int] | None = None
) -> dict[str, torch.Tensor]:
    """``{task: palette == its id or ALL_TASKS}``; a task's id is ``ids[task]``, else its
    position in ``tasks`` (the model's task order, as in its palette table)."""
    ids = ids or {name: index for index, name in enumerate(tasks)}
    every = palette == ALL_TASKS
    return {name: (palette == ids[name]) | every for name in tasks}


class PaletteMaskAdapter(OutputAdapter):
    """``{task: [B, C, H, W]}`` (and ``"task@tag"``) -> the same, supervised where the palette
    asks for the task (the baselines of Popovic et al., CVPR 2021, Sec. 5.2).

    ``decode_composite``: the outputs are 3-channel composite outputs, one per task, turned
    into each task's raw output by ``Task.from_composite`` (the baselines share the CTN's
    decoder and output space). ``ids`` maps a task to its palette id when the palette is drawn
    over more tasks than the model predicts (a single-task network trained under a
    multi-task rule); by default a task's id is its position among the model's tasks.
    """

    def __init__(
        self,
        decode_composite: bool,
        palette: str = "palette",
        ids: Mapping[str, int] | None = None,
    ) -> None:
        self.decode_composite = decode_composite
        self.palette = palette
        self.ids = dict(ids) if ids is not None else None

    def __call__(
        self,
        outputs: Mapping[str, torch.Tensor],
        tasks: Mapping[str, Any],
        conditions: Mapping[str, torch.Tensor],
    ) -> AdaptedOutputs:
        adapted = dict(outputs)
        if self.decode_composite:
            adapted = {
                key: tasks[key.partition("@")[0]].from_composite(value)
                for key, value in outputs.items()
            }
        return AdaptedOutputs(adapted, palette_masks(conditions[self.palette], tasks, self.ids))
