"""Detect raw card numbers (PANs) anywhere in a request. Pure; the number is never kept."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# 13-19 digits, optionally grouped by single spaces or dashes, not inside a longer number.
_CANDIDATE = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _pan_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            yield m.span()


def text_has_pan(text: str) -> bool:
    return next(_pan_spans(text), None) is not None


def contains_pan(value: Any) -> bool:
    """True if any string, number or key in a JSON-like value holds a Luhn-valid 13-19 digit run."""
    if isinstance(value, str):
        return text_has_pan(value)
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float):
        return text_has_pan(str(value))
    if isinstance(value, dict):
        return any(contains_pan(k) or contains_pan(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_pan(v) for v in value)
    return False


def redact_pans(text: str) -> str:
    """Replace every PAN-like run in `text`, for error bodies and logs."""
    out, last = [], 0
    for start, end in _pan_spans(text):
        out.append(text[last:start])
        out.append("[REDACTED]")
        last = end
    out.append(text[last:])
    return "".join(out)
