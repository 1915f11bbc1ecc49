"""Names given by users (`bench --name`, `extract --name`) become folder and file names: they must stay names.

A name is refused, in one line, when it is empty, has a path separator, is '.' or '..' or contains '..',
starts with '-' or '.', or has control characters: `bench --name ../../escaped` would otherwise write its
tables two folders above results/.
"""
from __future__ import annotations

import re

from clipbridge.errors import ClipBridgeError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(value: str, option: str) -> str:
    """`value` unchanged when it is a plain name; ClipBridgeError naming `option` otherwise."""
    text = str(value)
    problem = ""
    if not text.strip():
        problem = "is empty"
    elif "/" in text or "\\" in text:
        problem = "contains a path separator"
    elif ".." in text:
        problem = "contains '..'"
    elif text.startswith((".", "-")):
        problem = "starts with '.' or '-'"
    elif _CONTROL.search(text):
        problem = "contains control characters"
    if problem:
        raise ClipBridgeError(f"{option} {text!r} {problem}: give a plain name (letters, digits, '-', '_', '.'), "
                              "not a path")
    return text
