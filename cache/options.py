"""Parsing of the options every stage's commands share: integer lists with ranges, comma-separated names."""
from __future__ import annotations

import re

from clipbridge.errors import ClipBridgeError


def parse_int_list(text: str, what: str) -> list[int]:
    """'1-3,5' -> [1, 2, 3, 5] (order kept, duplicates dropped); a malformed list is a ClipBridgeError."""
    values: list[int] = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise ClipBridgeError(f"{what} {text!r} is not a list of integers or ranges such as '1-3,5'")
        low = int(match.group(1))
        values += range(low, int(match.group(2) or low) + 1)
    return list(dict.fromkeys(values))


def parse_names(text: str | None) -> list[str] | None:
    """'a, b' -> ['a', 'b']; None or '' -> None."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None
