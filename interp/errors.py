"""Errors a user can cause, each saying what is wrong and how to fix it in one line; and warnings, one line each."""

from __future__ import annotations

import sys


class InterpError(Exception):
    """A user-facing error: the CLI prints it on one line and exits with status 2."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


def warn(message: str) -> None:
    """One `warning: ...` line on stderr: the command goes on, but something in its results says less than it seems."""
    print("warning: " + " ".join(message.split()), file=sys.stderr)
