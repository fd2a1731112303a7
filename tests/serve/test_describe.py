"""``serve/describe``: what the page reads of a task comes from the task's hooks alone
(meaning, picture key, picture colours, prediction values), so a task it has never seen
is described, legended and hovered like the built-in ones."""

import base64

import numpy as np
import pytest
import torch

from densetasks.pictures import ColourBar
from densetasks.serve.describe import COLOUR_BAR_STOPS, describe_task, legend, raw_values
from densetasks.tasks.base import Meaning
from densetasks.tasks.depth import Depth
from densetasks.tasks.normals import SurfaceNormals
from densetasks.tasks.semseg import SemanticSegmentation


class Temperature(SurfaceNormals):
    """A task the page does not know: one channel in kelvin, keyed by a linear colour bar."""

    name = "temperature"
    picture_colours = "unused: the key says it"

    def meaning(self):
        return Meaning("surface temperature", unit="K", channels=("t",), digits=1)

    def picture_key(self, value, mask=None):
        return ColourBar("inferno", float(value.min()), float(value.max()), "K")

    def decode(self, output):
        return output * 100.0


def decoded(values: dict) -> np.ndarray:
    dtype = np.uint8 if values["dtype"] == "uint8" else np.float32
    return np.frombuffer(base64.b64decode(values["data"]), dtype=dtype).reshape(values["shape"])


def test_a_task_it_has_never_seen_is_described_by_its_meaning_and_key() -> None:
    task = Temperature()
    description = describe_task(task)
    assert description == {
        "name": "temperature",
        "meaning": "surface temperature",
        "unit": "K",
        "digits": 1,
        "channels": ["t"],
    }
    value = torch.tensor([[[250.0, 300.0], [275.0, 290.0]]])
    shown = legend(task, value)
    assert shown["kind"] == "colourbar" and shown["unit"] == "K"
    assert len(shown["stops"]) == COLOUR_BAR_STOPS
    assert [stop["value"] for stop in shown["stops"]][::4] == [250.0, 275.0, 300.0]
    values = raw_values(task, torch.tensor([[[2.5, 3.0]]]))
    np.testing.assert_allclose(decoded(values), [[[250.0, 300.0]]])  # decoded, in kelvin


def test_classes_are_named_in_the_colours_of_the_picture_and_the_present_ones_listed() -> None:
    task = SemanticSegmentation(num_classes=3)
    classes = describe_task(task)["classes"]
    assert [entry["name"] for entry in classes] == ["class 0", "class 1", "class 2"]
    assert [entry["colour"] for entry in classes] == task.colours.tolist()
    assert legend(task, torch.tensor([[2, 0], [2, 255]])) == {"kind": "classes", "ids": [0, 2]}
    values = raw_values(task, torch.tensor([[[0.0, 5.0]], [[1.0, 0.0]], [[0.0, 0.0]]]))
    assert values["dtype"] == "uint8" and decoded(values).tolist() == [[1, 0]]


def test_without_a_key_the_legend_is_the_pictures_colours_in_words() -> None:
    assert legend(SurfaceNormals(), torch.zeros(3, 2, 2)) == {
        "kind": "text",
        "text": SurfaceNormals.picture_colours,
    }
    assert legend(Depth(), torch.zeros(1, 2, 2))["kind"] == "text"  # no depth to bar


def test_the_depth_bar_runs_from_the_nearest_to_the_farthest_depth_shown() -> None:
    stops = legend(Depth(), torch.tensor([[[1.0, 4.0], [2.0, 0.0]]]))["stops"]
    assert (stops[0]["value"], stops[-1]["value"]) == (1.0, 4.0)
    assert stops[COLOUR_BAR_STOPS // 2]["value"] == pytest.approx(1.6)  # 1/d halfway: 0.625
    bright, dark = sum(stops[0]["colour"]), sum(stops[-1]["colour"])
    assert bright > dark
