"""Errors a user can fix. Each renders as one line: where, then what is wrong."""
from __future__ import annotations


class LabError(Exception):
    """A problem in the user's input or request; the CLI prints it as one line."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, obj: str | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.obj = obj
        self.field = field

    def where(self) -> str:
        return ": ".join(part for part in (self.file, self.obj, self.field) if part)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


class InvalidError(LabError):
    """Like the API server's 422 Unprocessable Entity: a field has a value it may not have."""

    def __init__(self, message: str, *, value=None, **where):
        if value is not None:
            message = f"Invalid value: {value!r}: {message}"
        super().__init__(message, **where)


class NotFoundError(LabError):
    exit_code = 3


class StateError(LabError):
    """The machine is not in the state a command needs (lab already up, not up, not root)."""

    exit_code = 4
