from __future__ import annotations

import pytest

from router.cli.replay import thresholds


def test_threshold_ranges_are_inclusive_and_lists_are_taken_as_given() -> None:
    assert thresholds("0.8:0.9:0.05") == (0.8, 0.85, 0.9)
    assert thresholds("0.97,0.9") == (0.97, 0.9)


@pytest.mark.parametrize("spec", ["0.9:0.8:0.01", "0.8:0.9:0", "a,b", "", "0.5,1.5"])
def test_bad_thresholds_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="--thresholds"):
        thresholds(spec)
