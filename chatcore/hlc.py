"""Hybrid logical clock: timestamps that order changes across devices.

A stamp is the wall clock in milliseconds, a counter that breaks ties within one
millisecond (and carries the order when a clock runs behind another device's),
and the device id as the last tiebreak. Stamps are fixed-width text, so sorting
them as strings orders them like :func:`hlc_key` does; SQLite compares them as
plain TEXT.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["COUNTER_MAX", "HybridClock", "format_stamp", "hlc_key"]

COUNTER_MAX = 99_999
"""The largest counter a stamp can carry (five digits); past it the clock moves
its physical part on by one millisecond instead."""
PHYSICAL_MAX = 10**13 - 1
"""The largest physical part (thirteen digits of milliseconds: the year 2286)."""

_STAMP = re.compile(r"^(\d{13})\.(\d{5})\.(.+)$", re.DOTALL)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def format_stamp(physical_ms: int, counter: int, device_id: str) -> str:
    """Build the text form of a stamp; ValueError if a part is out of range."""
    if not 0 <= physical_ms <= PHYSICAL_MAX:
        raise ValueError(f"HLC physical time {physical_ms} is outside 0..{PHYSICAL_MAX}")
    if not 0 <= counter <= COUNTER_MAX:
        raise ValueError(f"HLC counter {counter} is outside 0..{COUNTER_MAX}")
    _check_device_id(device_id)
    return f"{physical_ms:013d}.{counter:05d}.{device_id}"


def hlc_key(stamp: str) -> tuple[int, int, str]:
    """Split a stamp into ``(physical_ms, counter, device_id)`` for ordering.

    Raises:
        ValueError: ``stamp`` is not ``"<13 digits>.<5 digits>.<device id>"``.
    """
    match = _STAMP.match(stamp) if isinstance(stamp, str) else None
    if match is None:
        raise ValueError(
            f"malformed HLC stamp {stamp!r}: expected '<13 digits>.<5 digits>.<device id>'"
        )
    return int(match.group(1)), int(match.group(2)), match.group(3)


def _check_device_id(device_id: str) -> None:
    if not isinstance(device_id, str) or not device_id or not device_id.isprintable():
        raise ValueError(f"a device id must be non-empty printable text, got {device_id!r}")


class HybridClock:
    """Issues strictly increasing stamps for one device and folds in remote ones.

    Thread-safe: the store stamps from worker threads and the event loop alike.
    """

    __slots__ = ("_counter", "_device_id", "_lock", "_physical", "_wall")

    def __init__(self, device_id: str, *, wall: Callable[[], int] = _wall_ms) -> None:
        _check_device_id(device_id)
        self._device_id = device_id
        self._wall = wall
        self._physical = 0
        self._counter = 0
        self._lock = threading.Lock()

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def last(self) -> str:
        """The newest stamp issued or observed (what to persist across restarts)."""
        with self._lock:
            return format_stamp(self._physical, self._counter, self._device_id)

    def now(self) -> str:
        """Return the next local stamp, greater than every stamp issued or observed."""
        with self._lock:
            wall = self._wall()
            if wall > self._physical:
                self._physical, self._counter = wall, 0
            else:
                self._bump()
            return format_stamp(self._physical, self._counter, self._device_id)

    def observe(self, remote: str) -> None:
        """Merge a remote stamp (HLC receive rule): later local stamps sort after it.

        Raises:
            ValueError: ``remote`` is not a well-formed stamp.
        """
        physical, counter, _ = hlc_key(remote)
        with self._lock:
            # Remember the larger of the two points; now() moves past it (to the
            # wall clock if that is ahead, else by one counter step).
            if (physical, counter) > (self._physical, self._counter):
                self._physical, self._counter = physical, counter

    def _bump(self) -> None:
        if self._counter < COUNTER_MAX:
            self._counter += 1
        else:
            # The counter is fixed-width: carry into the physical part so text
            # order stays time order.
            self._physical += 1
            self._counter = 0
