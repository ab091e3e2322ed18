"""Tests for the hybrid logical clock that orders replicated changes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcore.hlc import COUNTER_MAX, HybridClock, format_stamp, hlc_key

STAMP = re.compile(r"^\d{13}\.\d{5}\.[0-9a-z-]+$")


class Wall:
    """A wall clock the test sets by hand (milliseconds)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_stamp_format_and_key() -> None:
    clock = HybridClock("dev-a", wall=Wall(1_700_000_000_123))
    stamp = clock.now()
    assert stamp == "1700000000123.00000.dev-a"
    assert STAMP.match(stamp)
    assert hlc_key(stamp) == (1_700_000_000_123, 0, "dev-a")
    assert format_stamp(5, 7, "x.y") == "0000000000005.00007.x.y"
    assert hlc_key("0000000000005.00007.x.y") == (5, 7, "x.y")  # dots in a device id are kept


def test_stamps_increase_when_the_wall_clock_stalls_or_goes_back() -> None:
    wall = Wall(1_000)
    clock = HybridClock("d", wall=wall)
    first, second = clock.now(), clock.now()
    assert [hlc_key(first), hlc_key(second)] == [(1_000, 0, "d"), (1_000, 1, "d")]
    wall.ms = 400  # NTP stepped the clock back
    third = clock.now()
    assert hlc_key(third) == (1_000, 2, "d")
    wall.ms = 2_000
    assert hlc_key(clock.now()) == (2_000, 0, "d")
    assert clock.last == "0000000002000.00000.d"


def test_counter_overflow_carries_into_the_milliseconds() -> None:
    clock = HybridClock("d", wall=Wall(10))
    clock.observe(format_stamp(10, COUNTER_MAX, "other"))
    stamp = clock.now()
    assert hlc_key(stamp) == (11, 0, "d")
    assert stamp > format_stamp(10, COUNTER_MAX, "zzz")


def test_observe_moves_past_a_remote_clock_that_runs_ahead() -> None:
    wall = Wall(1_000)
    clock = HybridClock("local", wall=wall)
    clock.now()
    remote = format_stamp(9_000, 3, "remote")
    clock.observe(remote)
    after = clock.now()
    assert hlc_key(after) == (9_000, 4, "local")
    assert after > remote
    clock.observe(format_stamp(5, 0, "old"))  # an older stamp changes nothing
    assert hlc_key(clock.now()) == (9_000, 5, "local")
    wall.ms = 10_000  # once the wall clock catches up, it leads again
    assert hlc_key(clock.now()) == (10_000, 0, "local")


@pytest.mark.parametrize(
    "bad",
    ["", "123.00001.d", "0000000000123.1.d", "0000000000123.00001.", "x" * 30, "0000000000123"],
)
def test_malformed_stamps_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed HLC stamp"):
        hlc_key(bad)
    with pytest.raises(ValueError, match="malformed HLC stamp"):
        HybridClock("d").observe(bad)


def test_bad_device_ids_and_parts_are_refused() -> None:
    with pytest.raises(ValueError, match="device id must be non-empty"):
        HybridClock("")
    with pytest.raises(ValueError, match="device id must be non-empty"):
        HybridClock("a\nb")
    with pytest.raises(ValueError, match=r"counter 100000 is outside 0..99999"):
        format_stamp(1, COUNTER_MAX + 1, "d")
    with pytest.raises(ValueError, match="physical time -1"):
        format_stamp(-1, 0, "d")


def test_the_real_wall_clock_is_the_default() -> None:
    physical, _, device = hlc_key(HybridClock("d").now())
    assert device == "d"
    assert physical > 1_600_000_000_000  # after September 2020


_events = st.lists(
    st.one_of(
        st.tuples(st.just("now"), st.integers(0, 5_000)),
        st.tuples(
            st.just("observe"),
            st.builds(
                format_stamp,
                st.integers(0, 5_000),
                st.integers(0, COUNTER_MAX),
                st.sampled_from(["a", "b", "zz"]),
            ),
        ),
    ),
    max_size=60,
)


@given(_events)
def test_every_stamp_exceeds_all_earlier_ones_issued_or_seen(
    events: list[tuple[str, object]],
) -> None:
    wall = Wall(0)
    clock = HybridClock("m", wall=wall)
    seen: list[tuple[int, int, str]] = []
    for kind, value in events:
        if kind == "observe":
            assert isinstance(value, str)
            clock.observe(value)
            seen.append(hlc_key(value))
        else:
            assert isinstance(value, int)
            wall.ms = value
            stamp = clock.now()
            key = hlc_key(stamp)
            assert all(key[:2] > earlier[:2] for earlier in seen)
            seen.append(key)


@given(
    st.lists(
        st.builds(
            format_stamp,
            st.integers(0, 10**13 - 1),
            st.integers(0, COUNTER_MAX),
            st.text(alphabet="0123456789abcdef.-", min_size=1, max_size=8),
        ),
        min_size=2,
        max_size=20,
    )
)
def test_text_order_is_key_order(stamps: list[str]) -> None:
    assert sorted(stamps) == sorted(stamps, key=hlc_key)
