"""JSON for people's tools: strict, as parsers other than Python's expect.

``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which are not JSON: every document and
event kling-render prints goes through ``json_text``, which refuses them (a non-finite number is
a bug to fix where it was made, never something to print).
"""

from __future__ import annotations

import json
from typing import Any


def json_text(doc: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``doc`` as strict JSON text; ValueError when it holds NaN or an infinity."""
    return json.dumps(doc, indent=indent, sort_keys=sort_keys, allow_nan=False)


__all__ = ["json_text"]
