"""How big a Firestore document is, and text clipped to fit one.

Firestore refuses documents over 1 MiB, counted by its storage-size rules
(https://firebase.google.com/docs/firestore/storage-size): a string is its UTF-8
bytes + 1, a number or timestamp 8, a boolean or null 1, a map the sum of its keys
and values, an array the sum of its elements, and a document its name plus its
fields plus 32. Characters are the wrong unit: a CJK character is 3 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

MAX_DOCUMENT_BYTES = 1_048_576
# What a document we write may use: room for its name (a path of a few ids), the map it
# may be nested in, Firestore's own fields and rounding.
DOCUMENT_BUDGET = MAX_DOCUMENT_BYTES - 16 * 1024


def value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | datetime):
        return 8
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, Mapping):
        return sum(value_size(str(k)) + value_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(value_size(item) for item in value)
    return len(str(value).encode("utf-8")) + 1  # anything else is stored as its text


def document_size(path: str, data: Mapping[str, Any]) -> int:
    name = sum(value_size(segment) for segment in path.split("/")) + 16
    return name + value_size(data) + 32


def clip_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of text whose UTF-8 encoding fits max_bytes, cut between characters."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max(max_bytes, 0)].decode("utf-8", "ignore")


def fit_text_field(data: dict[str, Any], name: str) -> bool:
    """Clips data[name] in place so that a document holding data fits its budget; True if it
    was cut."""
    text = str(data.get(name) or "")
    others = value_size({**data, name: ""})
    room = DOCUMENT_BUDGET - others
    clipped = clip_utf8(text, room)
    data[name] = clipped
    return len(clipped) < len(text)
