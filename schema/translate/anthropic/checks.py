"""The checks every Anthropic translation shares: a field of the JSON type it
must have or a 400 naming it (``param`` is the field's dotted path), every
field of a request handled, a listed hint or refused, and the compact JSON
text that tool arguments travel as."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from schema.translate import Untranslatable

JSON = dict[str, Any]


def refuse(param: str, why: str) -> Untranslatable:
    return Untranslatable(f"`{param}`: {why}", param=param)


def as_object(value: object, param: str, fields: frozenset[str] | None = None) -> JSON:
    """``value`` as an object; with ``fields``, one holding no other field
    (a ``null`` one says nothing: SDKs send their models' unset fields so)."""
    if not isinstance(value, dict):
        raise refuse(param, "must be an object")
    for name in sorted(value.keys() - fields if fields is not None else ()):
        if value[name] is not None:
            raise refuse(f"{param}.{name}", "this field cannot be translated")
    return value


def as_array(value: object, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise refuse(param, "must be an array")
    return value


def as_text(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise refuse(param, "must be a string")
    return value


def as_number(value: object, param: str, *, low: float, high: float, why: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise refuse(param, why)
    return value


def absent(value: object) -> bool:
    return value is None


def check_fields(payload: JSON, handled: frozenset[str], hints: frozenset[str],
                  refused: dict[str, tuple[Callable[[Any], bool], str]], target: str) -> None:
    """Every field is handled, a listed hint, or refused; none is lost unseen."""
    for name, value in payload.items():
        if name in handled or name in hints:
            continue
        if name in refused:
            harmless, why = refused[name]
            if not harmless(value):
                raise refuse(name, why)
            continue
        raise refuse(name, f"this field cannot be translated for {target}")


def json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
