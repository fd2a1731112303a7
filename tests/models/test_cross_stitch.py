"""Cross-stitch networks (Misra et al., CVPR 2016; the survey of Vandenhende et al.): the
unit's function and initialisation, what is shared for any placement of the units, one
column per task, options.

Equality with the survey's code is checked by tools/compare_mtl_pytorch.py (docs/models.md).
"""

import pytest
import torch

from densetasks.errors import ConfigError
from densetasks.models import create_model
from densetasks.models.architectures.cross_stitch import CrossStitch, CrossStitchUnit

from .sharing import (
    SMALL,
    assert_shares_what_every_task_reaches,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread

TASKS = {"semseg": 5, "depth": 1, "normals": 3}


def small(tasks=TASKS, **options) -> CrossStitch:
    torch.manual_seed(0)
    return create_model("cross_stitch", tasks, encoder="tiny", **{**SMALL, **options})


def test_a_unit_mixes_the_tasks_channel_wise_from_the_paper_initialisation():
    unit = CrossStitchUnit(["a", "b", "c"], 2, alpha=0.9, beta=0.1)
    expected = torch.tensor([[0.1, 0.1], [0.9, 0.9], [0.1, 0.1]])
    torch.testing.assert_close(unit.alpha["b"].detach(), expected, rtol=0, atol=0)
    with torch.no_grad():
        unit.alpha["a"].copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    x = {
        task: torch.full((1, 2, 1, 1), value)
        for task, value in zip("abc", (1.0, 10.0, 100.0), strict=True)
    }
    mixed = unit(x)
    # channel 0: 1·1 + 3·10 + 5·100; channel 1: 2·1 + 4·10 + 6·100
    assert mixed["a"].flatten().tolist() == [531.0, 642.0]
    assert mixed["b"].flatten().tolist() == pytest.approx([0.1 + 9.0 + 10.0] * 2)


def test_units_sit_after_every_stage_but_the_stem_and_each_task_has_its_own_column():
    model = small()
    assert sorted(model.units) == ["1", "2", "3", "4"]
    columns = list(model.columns.values())
    assert len({id(column) for column in columns}) == 3
    weights = [column.stages[0][0].weight for column in columns]
    assert not torch.equal(weights[0], weights[1])  # rebuilt: its own random weights


def test_with_identity_units_the_columns_are_single_task_networks():
    model = small(alpha=1.0, beta=0.0).eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = model(image)
        for task, column in model.columns.items():
            alone = model.heads[task](column(image), image.shape[-2:])
            torch.testing.assert_close(outputs[task], alone, rtol=0, atol=0)


@pytest.mark.parametrize("units", [None, [1, 2], [0, 4]])
def test_shared_parameters_are_what_every_task_reaches(units):
    model = small(units=units)
    assert_shares_what_every_task_reaches(model, torch.randn(2, 3, 32, 32))
    if units == [1, 2]:
        names = {
            n for n, p in model.named_parameters() if any(p is q for q in model.shared_parameters())
        }
        assert not any(name.startswith(("units.2.", "columns.semseg.stages.3")) for name in names)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"units": []}, r"model.options.units: \[\] must be a non-empty list"),
        ({"units": [5]}, r"model.options.units: \[5\] .* from 0 to 4"),
        ({"bottleneck": "nope"}, "unknown bottleneck 'nope'"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        small(**options)
