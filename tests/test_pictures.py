"""``densetasks.pictures``: the keys drawn under a picture (class legend, colour bar with
ticks, icon) and the joint key of two pictures, knowing no task (each task's own key is
tested with the task)."""

import matplotlib
import numpy as np
import pytest

from densetasks.pictures import (
    KEY_MARGIN,
    KEY_ROW_HEIGHT,
    SWATCH,
    TICK,
    ClassLegend,
    ColourBar,
    IconKey,
    joint_key,
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
    assert bar.labels() == ("-1 K", "3 K")
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
    assert bar.labels() == ("1 m", "4 m")


def test_a_bar_over_one_value_gives_it_the_top_colour() -> None:
    for inverse in (False, True):
        bar = ColourBar("magma", 2.0, 2.0, inverse=inverse)
        np.testing.assert_array_equal(bar.positions(np.array([2.0])), [1.0])
    assert ColourBar("gray", 2.0, 2.0).labels() == ("2", "2")
    assert ColourBar("gray", 2.0, 2.0).ticks() == []


def test_the_bar_is_drawn_left_to_right_from_low_to_high_over_its_labels() -> None:
    bar = ColourBar("magma", 0.5, 7.25, unit="m", inverse=True)
    picture = bar.draw(200)
    assert picture.shape == (KEY_MARGIN + SWATCH + TICK + KEY_ROW_HEIGHT, 200, 3)
    stripe = picture[KEY_MARGIN + SWATCH // 2]
    np.testing.assert_array_equal(stripe[KEY_MARGIN], by_hand("magma", 1.0))  # low: bright
    np.testing.assert_array_equal(stripe[-KEY_MARGIN - 1], by_hand("magma", 0.0))
    assert (picture[-12:] < 60).all(axis=2).any()  # the labels


def test_ticks_are_round_values_inside_the_bar() -> None:
    """Depth's bar from 0.86 m to the 80 m cap: 1, 2 and 5 of every decade between (issue
    24: the sheet labelled only 0.86 and 80); a linear bar: matplotlib's steps."""
    assert ColourBar("magma", 0.86, 80.0, "m", inverse=True).ticks() == [1, 2, 5, 10, 20, 50]
    assert ColourBar("magma", 1.2, 1.9, "m", inverse=True).ticks() == []
    assert ColourBar("viridis", -1.0, 3.0).ticks() == [0, 1, 2]


def test_a_tick_mark_sits_where_the_bar_has_its_value_colour() -> None:
    """Under every tick mark (a dark pixel below the bar) the bar shows the colour of the
    tick's value: the ticks of an inverse bar bunch towards its far end as its colours do."""
    bar = ColourBar("magma", 0.86, 80.0, "m", inverse=True)
    width = 300
    picture = bar.draw(width)
    marks = np.flatnonzero((picture[KEY_MARGIN + SWATCH] < 60).all(axis=1))
    span = width - 2 * KEY_MARGIN
    expected = [round(f * (span - 1)) + KEY_MARGIN for f in bar.fractions(bar.ticks())]
    assert set(expected) <= set(marks.tolist())
    stripe = picture[KEY_MARGIN + SWATCH // 2].astype(int)
    colours = bar.colours(np.array(bar.ticks())).astype(int)
    for x, colour in zip(expected, colours, strict=True):
        assert np.abs(stripe[x] - colour).max() <= 12, x  # one pixel of the gradient
    assert expected == sorted(expected) and expected[-1] - expected[-2] < expected[1] - expected[0]


def test_a_joint_bar_spans_both_ranges_and_a_missing_key_gives_the_other() -> None:
    near = ColourBar("magma", 1.09, 6.46, "m", inverse=True)
    far = ColourBar("magma", 2.15, 44.57, "m", inverse=True)
    assert joint_key(near, far) == ColourBar("magma", 1.09, 44.57, "m", inverse=True)
    assert joint_key(None, far) is far and joint_key(near, None) is near
    assert joint_key(None, None) is None
    with pytest.raises(ValueError, match="two colour codes"):
        joint_key(near, ColourBar("viridis", 0.0, 1.0))
    with pytest.raises(ValueError, match="a ColourBar and a ClassLegend"):
        joint_key(near, ClassLegend(NAMES, COLOURS))


def test_the_legend_has_the_classes_in_order_with_their_colours() -> None:
    picture = ClassLegend(NAMES, COLOURS).draw(400)
    assert picture.shape[1] == 400 and (picture < 60).all(axis=2).any()  # black text
    lefts = [np.flatnonzero((picture == colour).all(axis=2).any(axis=0))[0] for colour in COLOURS]
    assert lefts == sorted(lefts)  # swatches left to right in class-id order
    for colour in COLOURS:
        assert (picture == colour).all(axis=2).sum() >= 8 * 8  # its swatch


def test_a_legend_of_some_classes_shows_them_in_id_order_and_joins_by_union() -> None:
    some = ClassLegend(NAMES, COLOURS, shown=(2, 0))
    assert some.entries == [("floor", (200, 0, 0)), ("person", (0, 0, 200))]
    picture = some.draw(400)
    assert not (picture == COLOURS[1]).all(axis=2).any()  # "wall" is not drawn
    joined = joint_key(some, ClassLegend(NAMES, COLOURS, shown=(1,)))
    assert joined.shown == (0, 1, 2)
    assert joint_key(some, ClassLegend(NAMES, COLOURS)).shown is None  # all classes
    with pytest.raises(ValueError, match="two different class tables"):
        joint_key(some, ClassLegend(("a", "b", "c"), COLOURS))


def test_an_icon_key_shows_its_icon_and_wraps_its_words() -> None:
    icon = np.zeros((12, 12, 3), dtype=np.uint8)
    icon[..., 1] = 250
    key = IconKey(icon, "colour: the way a surface faces, as on this ball")
    wide, narrow = key.draw(400), key.draw(80)
    np.testing.assert_array_equal(
        wide[KEY_MARGIN : KEY_MARGIN + 12, KEY_MARGIN : KEY_MARGIN + 12], icon
    )
    assert wide.shape[1] == 400 and (wide[:, 20:] < 60).all(axis=2).any()  # the words
    assert narrow.shape[0] > wide.shape[0]  # more rows of words
    assert joint_key(key, key) is key


def test_a_narrow_legend_wraps_into_more_rows() -> None:
    legend = ClassLegend(NAMES, COLOURS)
    assert legend.draw(400).shape == (KEY_ROW_HEIGHT + KEY_MARGIN, 400, 3)
    assert legend.draw(60).shape == (3 * KEY_ROW_HEIGHT + KEY_MARGIN, 60, 3)


def test_a_key_sits_under_the_picture_at_its_width_and_no_key_leaves_it_as_it_is() -> None:
    picture = np.full((16, 80, 3), 7, dtype=np.uint8)
    bar = ColourBar("gray", 0.0, 1.0)
    keyed = keyed_picture(picture, bar)
    assert keyed.shape == (16 + KEY_MARGIN + SWATCH + TICK + KEY_ROW_HEIGHT, 80, 3)
    np.testing.assert_array_equal(keyed[:16], picture)
    np.testing.assert_array_equal(keyed[16:], bar.draw(80))
    assert keyed_picture(picture, None) is picture
