"""Argument checks shared by the package: one place for the wording of errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming the allowed values when ``value`` is not one of them."""
    allowed = tuple(allowed)
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}.")


def check_rate(name: str, value: float) -> float:
    """Check that a pruning rate lies in [0, 1) and return it as a float."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}.") from None
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"{name} must lie in [0, 1) (0 keeps everything, 0.5 removes half); got {value!r}."
        )
    return rate
