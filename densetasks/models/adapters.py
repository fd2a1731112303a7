"""Output adapters: from what an architecture returns to what each task's loss reads.

The identity adapter (:class:`~densetasks.models.base.OutputAdapter`) is the default. A
CompositeTasking network (Popovic et al., CVPR 2021) returns one shared 3-channel output
conditioned per pixel by a Task Palette; :class:`CompositeAdapter` turns it into every task's
raw output with ``Task.from_composite`` (Sec. 3.3) and supervises each task only where the
palette asks for it.
"""

from collections.abc import Mapping
from typing import Any

import torch

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
        palette = conditions[self.palette]
        masks = {name: palette == index for index, name in enumerate(tasks)}
        return AdaptedOutputs(adapted, masks)
