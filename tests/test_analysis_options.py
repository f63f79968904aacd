"""Analysis options: upper bounds, refused in one line that names the allowed range (issue 24)."""
import pytest

from lab.analysis.errors import AnalysisError
from lab.analysis.options import (
    MAX_DRAWS, MAX_LANDSCAPE_POINTS, MAX_LANDSCAPE_POINTS_2D, MAX_SHATTER_POINTS, resolve_options,
)


@pytest.mark.parametrize("name, options, message", [
    ("lesion", {"draws": MAX_DRAWS + 1}, f"draws must be an integer from 1 to {MAX_DRAWS}, got {MAX_DRAWS + 1}"),
    ("lesion", {"max_swaps": 10**9}, "max_swaps must be an integer from 0 to 10,000"),
    ("landscape", {"points": MAX_LANDSCAPE_POINTS + 1}, f"points must be an integer from 2 to {MAX_LANDSCAPE_POINTS}"),
    ("landscape", {"points": MAX_LANDSCAPE_POINTS_2D + 1, "two_d": True},
     f"points must be an integer from 2 to {MAX_LANDSCAPE_POINTS_2D} with two_d"),
    ("landscape", {"span": 1e9}, "span must be a number in (0, 100]"),
    ("shatter", {"points": MAX_SHATTER_POINTS + 1}, f"points must be an integer from 3 to {MAX_SHATTER_POINTS}"),
    ("shatter", {"seed": 2**70}, "seed must be an integer from 0 to"),
])
def test_too_large_options_are_refused_with_the_range(name, options, message):
    with pytest.raises(AnalysisError) as info:
        resolve_options(name, options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_largest_allowed_values_pass():
    assert resolve_options("lesion", {"draws": MAX_DRAWS})["draws"] == MAX_DRAWS
    assert resolve_options("landscape", {"points": MAX_LANDSCAPE_POINTS_2D + 1})["points"] == MAX_LANDSCAPE_POINTS_2D + 1
    assert resolve_options("landscape", {"points": MAX_LANDSCAPE_POINTS_2D, "two_d": True})["two_d"] is True
    assert resolve_options("shatter", {"points": MAX_SHATTER_POINTS})["points"] == MAX_SHATTER_POINTS
