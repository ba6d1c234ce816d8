"""Pure logic of the emulator: its synthetic answers (pipeline/emulator/synthetic.py), and the
call limit, per-second accounting and fault draws behind its chaos options
(pipeline/emulator/faults.py and stats.py)."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter

import pytest

from pipeline.emulator import PLATE_SYLLABLES, synthetic_result
from pipeline.emulator.faults import (
    FAULT_KINDS,
    FaultInjector,
    SlidingWindowLimiter,
    parse_fault_kinds,
)
from pipeline.emulator.stats import PerSecondCounter

PLATE_RE = re.compile(r"^\d{2,3}[가-힣]\d{4}$")


def _check_plates(result: dict, width: int, height: int) -> None:
    assert len(result["values"]) == len(result["boxes"])
    for value in result["values"]:
        assert PLATE_RE.match(value["value"]), value
        assert re.sub(r"\d", "", value["value"]) in PLATE_SYLLABLES
        assert 0.30 <= value["conf"] <= 0.99
        assert round(value["conf"], 4) == value["conf"]
    for box in result["boxes"]:
        assert all(isinstance(v, int) for v in box.values())
        for corner in (1, 2, 3, 4):
            assert 0 <= box[f"x{corner}"] < width and 0 <= box[f"y{corner}"] < height
        assert box["x1"] == box["x4"] <= box["x2"] == box["x3"]
        assert box["y1"] <= box["y4"] and box["y2"] <= box["y3"]


def test_one_plate_at_most_and_a_quarter_without_by_default() -> None:
    rng = random.Random(7)
    counts: Counter[int] = Counter()
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(1, 64))
        width, height = rng.randrange(1, 4000), rng.randrange(1, 4000)
        result = synthetic_result(data, width, height, "png")
        assert result == synthetic_result(data, width, height, "png")
        _check_plates(result, width, height)
        counts[len(result["values"])] += 1
    assert set(counts) == {0, 1}, counts
    assert 400 < counts[0] < 600, counts  # NO_PLATE_SHARE of 2000, give or take


def _plateless(images: list[bytes], share: float) -> list[bytes]:
    return [
        data
        for data in images
        if not synthetic_result(data, 640, 480, "jpg", no_plate_share=share)["values"]
    ]


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.6, 1.0])
def test_the_no_plate_share_is_deterministic_and_near_the_setting(share: float) -> None:
    rng = random.Random(11)
    images = [rng.randbytes(48) for _ in range(400)]
    plateless = _plateless(images, share)
    assert _plateless(images, share) == plateless
    # Binomial(400, share): within 5 standard deviations (at most 50 images).
    assert abs(len(plateless) - 400 * share) <= 5 * (400 * share * (1 - share)) ** 0.5, share
    # A lower share only gives plates to more images; those with plates keep the same ones.
    assert set(_plateless(images, share / 2)) <= set(plateless)
    for data in set(images) - set(plateless):
        plates = synthetic_result(data, 640, 480, "jpg", no_plate_share=share)
        assert plates == synthetic_result(data, 640, 480, "jpg", no_plate_share=0)


def test_several_plates_on_request_pair_values_with_boxes() -> None:
    rng = random.Random(5)
    counts: Counter[int] = Counter()
    for _ in range(600):
        data = rng.randbytes(32)
        one = synthetic_result(data, 1920, 1080, "jpg")
        several = synthetic_result(data, 1920, 1080, "jpg", max_plates=3)
        _check_plates(several, 1920, 1080)
        counts[len(several["values"])] += 1
        # The same images have no plate, and the first plate is the one NHN-like answers give.
        assert bool(one["values"]) == bool(several["values"])
        assert one["values"][:1] == several["values"][:1]
        # Plates side by side: each box in its own strip, left to right, never overlapping.
        xs = [(box["x1"], box["x2"]) for box in several["boxes"]]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(xs)), xs
    assert set(counts) == {0, 1, 2, 3}, counts
    assert all(100 < counts[n] < 200 for n in (1, 2, 3)), counts  # a third of 450 each


@pytest.mark.parametrize(
    ("size", "resolution"),
    [((1280, 720), "normal"), ((720, 1280), "normal"), ((1279, 720), "low"), ((4000, 719), "low")],
)
def test_resolution_follows_hd_threshold(size: tuple[int, int], resolution: str) -> None:
    assert synthetic_result(b"x", *size, "jpg")["resolution"] == resolution


def test_the_window_slides_instead_of_resetting_each_second() -> None:
    limiter = SlidingWindowLimiter(3)  # times in binary fractions, so differences are exact
    assert [limiter.admit(t) for t in (0.0, 0.25, 0.5)] == [True, True, True]
    assert limiter.admit(0.75) is False
    assert limiter.admit(1.0) is True  # the call at 0.0 has left the window
    # A window reset at each whole second would admit these two.
    assert limiter.admit(1.125) is False
    assert limiter.admit(1.125) is False
    assert limiter.admit(1.25) is True  # the call at 0.25 has left
    assert limiter.admit(1.375) is False


def test_refused_calls_do_not_hold_the_window() -> None:
    limiter = SlidingWindowLimiter(1)
    assert limiter.admit(0.0) is True
    assert not any(limiter.admit(0.1 * k) for k in range(1, 10))  # refused up to 0.9
    assert limiter.admit(1.0) is True  # the refusals at 0.1..0.9 did not push this back


def test_no_limit_admits_everything() -> None:
    limiter = SlidingWindowLimiter(0)
    assert all(limiter.admit(0.0) for _ in range(10_000))


def test_per_second_counts_include_idle_seconds_and_stay_bounded() -> None:
    counter = PerSecondCounter(started=100.0, history=5)
    assert counter.counts(100.0) == [0]
    for now in (100.1, 100.9, 101.0, 103.5):
        counter.add(now)
    assert counter.counts(103.9) == [2, 1, 0, 1]
    assert counter.counts(104.0) == [2, 1, 0, 1, 0]  # the new second is open, still empty
    counter.add(104.2)
    counter.add(103.99)  # stamped before a stats read opened the next second
    assert counter.counts(104.5) == [2, 1, 0, 2, 1]
    assert counter.counts(106.0) == [0, 2, 1, 0, 0]  # the first seconds fell out
    assert counter.counts(10_000.0) == [0] * 5  # a long idle spell stays bounded


def test_fault_kinds_parse_and_unknown_ones_are_named() -> None:
    assert parse_fault_kinds("http_502, drop,drop") == ("http_502", "drop")
    assert parse_fault_kinds(["-1", "slow"]) == ("-1", "slow")
    assert parse_fault_kinds(",".join(FAULT_KINDS)) == FAULT_KINDS
    with pytest.raises(ValueError, match="'nonsense'"):
        parse_fault_kinds("drop,nonsense")
    with pytest.raises(ValueError, match="no fault kinds"):
        parse_fault_kinds([])


def test_fault_draws_follow_the_rate_and_the_seed() -> None:
    injector = FaultInjector(0.5, ("drop", "slow"), seed=3)
    picks = [injector.pick() for _ in range(2000)]
    again = FaultInjector(0.5, ("drop", "slow"), seed=3)
    assert [again.pick() for _ in range(2000)] == picks
    counts = Counter(picks)
    assert 900 < counts[None] < 1100
    assert 400 < counts["drop"] < 600 and 400 < counts["slow"] < 600
    assert set(counts) == {None, "drop", "slow"}
    always = FaultInjector(1.0, ("-1",))
    assert all(always.pick() == "-1" for _ in range(100))
    assert all(FaultInjector(0.0).pick() is None for _ in range(100))


@pytest.mark.parametrize("rate", [-0.1, 1.01])
def test_fault_rate_outside_0_to_1_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultInjector(rate)
