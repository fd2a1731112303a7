"""``densetasks.pictures``: the keys drawn under a picture (class legend, colour bar) and the
sheet, knowing no task (each task's own key is tested with the task)."""

import matplotlib
import numpy as np
import pytest

from densetasks.pictures import (
    KEY_MARGIN,
    KEY_ROW_HEIGHT,
    SWATCH,
    ClassLegend,
    ColourBar,
    keyed_picture,
)

NAMES = ("floor", "wall", "person")
COLOURS = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200]], dtype=np.uint8)


def by_hand(colormap: str, positions) -> np.ndarray:
    """matplotlib's colours at ``positions``, as ``uint8``."""
    rgba = np.asarray(matplotlib.colormaps[colormap](positions))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def test_a_linear_bar_colours_values_by_their_place_between_low_and_high() -> None:
    bar = ColourBar("viridis", -1.0, 3.0, unit="K")
    values = np.array([-1.0, 0.0, 3.0, 5.0])  # 5 is beyond the bar: its end colour
    np.testing.assert_allclose(bar.positions(values), [0.0, 0.25, 1.0, 1.0])
    np.testing.assert_array_equal(bar.colours(values), by_hand("viridis", [0, 0.25, 1, 1]))
    assert bar.labels() == ("-1.00 K", "3.00 K")
    stops = bar.stops(5)
    assert [value for value, _ in stops] == pytest.approx([-1.0, 0.0, 1.0, 2.0, 3.0])
    assert [colour for _, colour in stops] == [
        tuple(c) for c in by_hand("viridis", [0, 0.25, 0.5, 0.75, 1])
    ]


def test_an_inverse_bar_is_linear_in_one_over_the_value_with_low_at_the_top_colour() -> None:
    """Depth's code: 1 m and 4 m at the ends, 2 m where 1/d is a third of the way up
    (1/2 − 1/4) / (1/1 − 1/4) = 1/3."""
    bar = ColourBar("magma", 1.0, 4.0, unit="m", inverse=True)
    np.testing.assert_allclose(bar.positions(np.array([1.0, 2.0, 4.0])), [1.0, 1 / 3, 0.0])
    stops = bar.stops(4)  # 1/d evenly spaced from 1 to 1/4: 1, 3/4, 1/2, 1/4
    assert [value for value, _ in stops] == pytest.approx([1.0, 4 / 3, 2.0, 4.0])
    assert [colour for _, colour in stops] == [
        tuple(c) for c in by_hand("magma", [1, 2 / 3, 1 / 3, 0])
    ]
    assert bar.labels() == ("1.00 m", "4.00 m")


def test_a_bar_over_one_value_gives_it_the_top_colour() -> None:
    for inverse in (False, True):
        bar = ColourBar("magma", 2.0, 2.0, inverse=inverse)
        np.testing.assert_array_equal(bar.positions(np.array([2.0])), [1.0])
    assert ColourBar("gray", 2.0, 2.0).labels() == ("2.00", "2.00")


def test_the_bar_is_drawn_left_to_right_from_low_to_high_over_its_labels() -> None:
    bar = ColourBar("magma", 0.5, 7.25, unit="m", inverse=True)
    picture = bar.draw(200)
    assert picture.shape == (KEY_MARGIN + SWATCH + KEY_ROW_HEIGHT, 200, 3)
    stripe = picture[KEY_MARGIN + SWATCH // 2]
    np.testing.assert_array_equal(stripe[KEY_MARGIN], by_hand("magma", 1.0))  # low: bright
    np.testing.assert_array_equal(stripe[-KEY_MARGIN - 1], by_hand("magma", 0.0))
    assert (picture[-12:] < 60).all(axis=2).any()  # the labels


def test_the_legend_has_the_classes_in_order_with_their_colours() -> None:
    picture = ClassLegend(NAMES, COLOURS).draw(400)
    assert picture.shape[1] == 400 and (picture < 60).all(axis=2).any()  # black text
    lefts = [np.flatnonzero((picture == colour).all(axis=2).any(axis=0))[0] for colour in COLOURS]
    assert lefts == sorted(lefts)  # swatches left to right in class-id order
    for colour in COLOURS:
        assert (picture == colour).all(axis=2).sum() >= 8 * 8  # its swatch


def test_a_narrow_legend_wraps_into_more_rows() -> None:
    legend = ClassLegend(NAMES, COLOURS)
    assert legend.draw(400).shape == (KEY_ROW_HEIGHT + KEY_MARGIN, 400, 3)
    assert legend.draw(60).shape == (3 * KEY_ROW_HEIGHT + KEY_MARGIN, 60, 3)


def test_a_key_sits_under_the_picture_at_its_width_and_no_key_leaves_it_as_it_is() -> None:
    picture = np.full((16, 80, 3), 7, dtype=np.uint8)
    bar = ColourBar("gray", 0.0, 1.0)
    keyed = keyed_picture(picture, bar)
    assert keyed.shape == (16 + KEY_MARGIN + SWATCH + KEY_ROW_HEIGHT, 80, 3)
    np.testing.assert_array_equal(keyed[:16], picture)
    np.testing.assert_array_equal(keyed[16:], bar.draw(80))
    assert keyed_picture(picture, None) is picture
