"""HTTP status ranges as health checks and configs write them: ``"200-299, 304"``."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["StatusRangeError", "format_status_ranges", "parse_status_ranges"]

_RANGE: Final = re.compile(r"\s*([1-5][0-9][0-9])\s*(?:-\s*([1-5][0-9][0-9])\s*)?")


class StatusRangeError(ValueError):
    """A status range list that does not parse; ``str()`` says found and expected."""


def parse_status_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """``"200-399"``, ``"200, 204, 300-308"`` → inclusive ``(low, high)`` ranges of
    statuses from 100 to 599."""
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        m = _RANGE.fullmatch(part)
        if m is None:
            raise StatusRangeError(
                f"found {text!r}: expected statuses or ranges from 100 to 599 separated by"
                " commas, such as '200-399' or '200, 204, 300-308'"
            )
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) else low
        if low > high:
            raise StatusRangeError(
                f"found {part.strip()!r} in {text!r}: expected a range whose first status is"
                f" not above its last, such as '{high}-{low}'"
            )
        ranges.append((low, high))
    return tuple(ranges)


def format_status_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    """The text form of ``ranges`` (inverse of :func:`parse_status_ranges`)."""
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
