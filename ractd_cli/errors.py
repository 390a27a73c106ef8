"""Errors a user can act on. Each carries a one-line message naming what to do and an exit code."""

from __future__ import annotations


class RactdError(Exception):
    """A runtime failure the user can fix (exit code 1). The message is one line, with the remedy."""

    exit_code = 1


class UsageError(RactdError):
    """Bad command-line input (exit code 2)."""

    exit_code = 2
