"""Checks of settings and inputs, shared by every layer (configuration, models, objectives, specs).

Each check raises a :class:`ValidationError` (a ``ValueError``) whose one-line message names the
field, the value and what is allowed, e.g. ``train.lr: -1 is not allowed; must be a finite real
number > 0``. Callers pass the field's full name (dotted for nested settings), so the message
points at the line of the file that holds the value.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Collection, Mapping
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ValidationError(ValueError):
    """A value that cannot be used; the one-line message names the field, the value and what is allowed."""


def invalid(field: str, value: Any, allowed: str) -> ValidationError:
    """The error for ``field`` holding ``value``; ``allowed`` says what it may hold instead."""
    return ValidationError(f"{field}: {value!r} is not allowed; {allowed}")


def one_line(e: BaseException) -> str:
    """An exception's message on one line (whitespace runs become single spaces)."""
    return " ".join(str(e).split())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_choice(field: str, value: Any, allowed: Collection[Any]) -> None:
    """``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValidationError(f"{field}: unknown value {value!r}; allowed: {', '.join(map(repr, allowed))}")


def check_bool(field: str, value: Any) -> None:
    """``value`` is True or False (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise invalid(field, value, "must be true or false")


def check_int(field: str, value: Any, *, low: int = 1, high: int | None = None) -> None:
    """``value`` is an integer (not a bool) in ``[low, high]``; ``high=None`` leaves it unbounded above."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        upper = f" and <= {high}" if high is not None else ""
        raise invalid(field, value, f"must be an integer >= {low}{upper}")


def check_real(
    field: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    allow_inf: bool = False,
) -> None:
    """``value`` is a real number (an int or a float, not a bool), finite unless ``allow_inf``, never NaN,
    and within the bounds given: ``gt`` (>), ``ge`` (>=), ``lt`` (<), ``le`` (<=)."""
    ok = _is_number(value) and not math.isnan(value) and (allow_inf or math.isfinite(value))
    bounds = [(">", gt, operator.gt), (">=", ge, operator.ge), ("<", lt, operator.lt), ("<=", le, operator.le)]
    bounds = [(sign, bound, holds) for sign, bound, holds in bounds if bound is not None]
    ok = ok and all(holds(value, bound) for _, bound, holds in bounds)
    if not ok:
        kind = "a real number" if allow_inf else "a finite real number"
        limits = " and ".join(f"{sign} {bound}" for sign, bound, _ in bounds)
        raise invalid(field, value, f"must be {kind}{' ' + limits if limits else ''}")


def check_name(field: str, value: Any) -> None:
    """``value`` can serve as a run id or a folder name: letters, digits, '.', '_' and '-', not starting with a
    punctuation mark."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise invalid(field, value, "must be a name of letters, digits, '.', '_' and '-'")


def as_mapping(field: str, value: Any) -> dict[str, Any]:
    """A section's settings; an empty section (``train:`` with nothing under it) is an empty mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(field, value, "must be a mapping of settings")
    return dict(value)


def check_keys(prefix: str, values: Mapping[str, Any], known: Collection[str], what: str = "key") -> None:
    """Every key of ``values`` is in ``known``; the error names the first unknown one as ``prefix.key``."""
    for key in values:
        if key not in known:
            raise ValidationError(f"{prefix}.{key}: unknown {what}; allowed: {', '.join(known)}")
