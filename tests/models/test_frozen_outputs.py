"""Frozen outputs: every registered architecture, seeded, on a fixed input, equals what it
computed when its file in ``tests/models/frozen/`` was written.

A refactor that changes a network's function (a layer moved, an initialisation or an
interpolation changed) fails here even when every shape and gradient test still passes
(segmentation_models.pytorch keeps such outputs for its encoders). A new architecture's
outputs are written once with ``pytest tests/models/test_frozen_outputs.py --update-frozen``
and committed; a change to an existing one's function is rewritten the same way, on purpose,
and said in the commit.
"""

from pathlib import Path

import pytest
import torch

from densetasks.errors import ConfigError
from densetasks.models import ARCHITECTURES, create_model

from ..conftest import architecture_encoder

FROZEN = Path(__file__).parent / "frozen"
TASKS = {"semseg": 5, "depth": 1, "normals": 3}
"""Three tasks, or the first alone for the architectures that predict exactly one."""
IMAGE_SHAPE = (2, 3, 24, 32)
"""Two images (batch-norm statistics in training mode), not square (a swapped axis shows)."""


def frozen_case(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The seeded architecture ``name`` on its test encoder (``tiny`` but for InvPT's ViT)
    and its outputs on a fixed image:
    ``eval/<pass>/<key>`` for every pass of its evaluation plan (the tasks it scores, or a
    shared output such as the composite one), ``train/<key>`` for one
    training-mode forward (with the auxiliary outputs; conditions as the first pass's)."""
    torch.manual_seed(0)
    encoder = architecture_encoder(name)
    try:
        model = create_model(name, TASKS, encoder=encoder, output_stride=16)
    except ConfigError:
        torch.manual_seed(0)
        model = create_model(name, dict(list(TASKS.items())[:1]), encoder=encoder)
    image = torch.randn(IMAGE_SHAPE, generator=torch.Generator().manual_seed(1))
    batch = {"image": image}
    outputs: dict[str, torch.Tensor] = {}
    model.eval()
    plan = model.evaluation_plan()
    with torch.no_grad():
        for index, evaluation_pass in enumerate(plan):
            conditions = {key: build(batch) for key, build in evaluation_pass.conditions.items()}
            scored = set(evaluation_pass.tasks) if evaluation_pass.rule is None else None
            for key, value in model(image, **conditions).items():
                if scored is None or key in scored or key not in TASKS:
                    outputs[f"eval/{index}/{key}"] = value.clone()
        model.train()
        conditions = {key: build(batch) for key, build in plan[0].conditions.items()}
        for key, value in model(image, **conditions).items():
            outputs[f"train/{key}"] = value.clone()
    return model, outputs


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_outputs_equal_the_frozen_ones(name, request):
    _, outputs = frozen_case(name)
    path = FROZEN / f"{name}.pt"
    if request.config.getoption("--update-frozen"):
        FROZEN.mkdir(exist_ok=True)
        torch.save(outputs, path)
    if not path.is_file():
        pytest.fail(
            f"{path} does not exist: write it once with "
            "`pytest tests/models/test_frozen_outputs.py --update-frozen` and commit it"
        )
    frozen = torch.load(path, weights_only=True)
    assert sorted(outputs) == sorted(frozen)
    for key, value in outputs.items():
        torch.testing.assert_close(value, frozen[key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_changed_function_fails_the_comparison():
    """The comparison can fail: a network whose weights moved gives other outputs."""
    model, _ = frozen_case("hard_sharing")
    frozen = torch.load(FROZEN / "hard_sharing.pt", weights_only=True)
    with torch.no_grad():
        next(iter(model.parameters())).add_(1e-2)
    model.eval()
    changed = model(torch.randn(IMAGE_SHAPE, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(changed["semseg"], frozen["eval/0/semseg"])
