"""Where a recording comes from, read off its object key: site, machine type, machine id.

Default layout `<site>/<machine_type>/<machine_id>/<file>.wav`, and MIMII's
`<machine_type>/<id>/{normal,abnormal}/<file>.wav` (any leading folders allowed). A custom
regular expression with named groups `site`, `machine_type`, `machine_id` may replace it
(`KEY_PATTERN` in the handlers' environment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

KNOWN_MACHINE_TYPES = ("pump", "fan", "slider", "valve")


@dataclass(frozen=True)
class KeyInfo:
    site: str | None = None
    machine_type: str | None = None
    machine_id: str | None = None


def default_pattern(machine_types: Iterable[str] = KNOWN_MACHINE_TYPES) -> re.Pattern[str]:
    types = "|".join(sorted({re.escape(t) for t in machine_types if t and t != "default"}, key=len, reverse=True))
    return re.compile(
        rf"(?:^|/)(?:(?P<site>[^/]+)/)??(?P<machine_type>{types})/(?P<machine_id>[^/]+)/(?:.+/)?[^/]+$",
        re.IGNORECASE,
    )


def parse_key(key: str, pattern: re.Pattern[str] | str | None = None, machine_types: Iterable[str] = KNOWN_MACHINE_TYPES) -> KeyInfo:
    """Site / machine type / machine id of a key; all None where the key does not follow the layout."""
    if pattern is None:
        pattern = default_pattern(machine_types)
    elif isinstance(pattern, str):
        pattern = re.compile(pattern)
    match = pattern.search(key)
    if not match:
        return KeyInfo()
    groups = match.groupdict()
    machine_type = groups.get("machine_type")
    return KeyInfo(
        site=groups.get("site") or None,
        machine_type=machine_type.lower() if machine_type else None,
        machine_id=groups.get("machine_id") or None,
    )
