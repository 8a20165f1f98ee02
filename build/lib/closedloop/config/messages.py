"""pydantic's validation errors, said the way a config error reads: short, with the value."""

from __future__ import annotations

from typing import Any


def show(value: Any) -> str:
    """A value as the user wrote it: strings quoted, numbers plain."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)) and len(repr(value)) > 60:
        return f"a {type(value).__name__}"
    return repr(value) if isinstance(value, str) else str(value)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def describe(err: dict) -> str:
    """One phrase for one pydantic error: 'must be > 0, got -0.1'."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = f", got {show(value)}"
    bounds = {
        "greater_than": (">", "gt"),
        "greater_than_equal": (">=", "ge"),
        "less_than": ("<", "lt"),
        "less_than_equal": ("<=", "le"),
    }
    if kind in bounds:
        sign, key = bounds[kind]
        return f"must be {sign} {_number(ctx[key])}{got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer{got}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false{got}"
    if kind == "string_type":
        return f"expected a string{got}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list{got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping{got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}{got}"
    if kind == "union_tag_invalid":
        return (
            f"unknown {ctx['discriminator']} {ctx['tag']!r} (choose from: {ctx['expected_tags']})"
        )
    if kind == "union_tag_not_found":
        return f"needs a {ctx['discriminator']} key"
    if kind in ("too_short", "too_long"):
        size = "at least" if kind == "too_short" else "at most"
        n = ctx.get("min_length", ctx.get("max_length"))
        return f"needs {size} {n} item(s){got}"
    if kind == "missing":
        return "missing: every key must be set (nothing has a default outside conf/)"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'][0].lower()}{err['msg'][1:]}{got}"
