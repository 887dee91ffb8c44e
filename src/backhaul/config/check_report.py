"""The verdict on a config as data: what ``backhaul check --json`` prints and what the admin
API's ``POST /config/validate`` answers, built in one place so the two agree.

``{"source", "valid", "problems": [{"path", "message"}], "config", "notes": [{"path",
"message"}]}``: ``config`` is None for a bad config, else the config with every default
filled in and units parsed (durations in seconds, sizes in bytes, addresses as host:port).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from backhaul.config.model import EdgeConfig, advisories
from backhaul.config.units import Address
from backhaul.errors import ConfigError

__all__ = ["check_report", "parsed_units"]


def parsed_units(value: object) -> Any:
    """``value`` (a config or any part of it) as JSON data with the values the edge uses:
    durations as float seconds, sizes as int bytes (not the ``"1m30s"``/``"64KiB"`` that
    the config's own serialisers write back), addresses and patterns as text."""
    if isinstance(value, BaseModel):
        return {name: parsed_units(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Address):
        return str(value)
    if isinstance(value, dict):
        return {str(key): parsed_units(item) for key, item in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [parsed_units(item) for item in value]
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, bytes):  # raw DHCP option values
        return "hex:" + value.hex(":")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def check_report(outcome: EdgeConfig | ConfigError, source: str) -> dict[str, Any]:
    """The report on a validated config, or on the :class:`ConfigError` that refused it."""
    if isinstance(outcome, ConfigError):
        problems = [{"path": path, "message": text} for path, text in outcome.problems]
        return {
            "source": outcome.source,
            "valid": False,
            "problems": problems,
            "config": None,
            "notes": [],
        }
    notes = [{"path": path, "message": text} for path, text in advisories(outcome)]
    return {
        "source": source,
        "valid": True,
        "problems": [],
        "config": parsed_units(outcome),
        "notes": notes,
    }
