"""Errors a user can act on. Each carries a one-line message naming what to do and an exit code."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


class RactdError(Exception):
    """A runtime failure the user can fix (exit code 1). The message is one line, with the remedy."""

    exit_code = 1


class UsageError(RactdError):
    """Bad command-line input (exit code 2)."""

    exit_code = 2


def check_seed(seed: int, option: str = "--seed") -> None:
    """Seeds are non-negative integers (numpy's SeedSequence, which seeds the episodes, takes no other)."""
    if seed < 0:
        raise UsageError(f"{option} must be a non-negative integer, got {seed}")


def unknown_choice(what: str, value: Any, choices: Iterable[Any]) -> str:
    """The one message for a name that is not among ``choices``: "unknown <what> 'x' (choose from
    a, b); did you mean 'y'?" (the hint only when a choice is close)."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {value!r} (choose from {', '.join(choices)}){hint}"
