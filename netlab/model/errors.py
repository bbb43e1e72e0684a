"""Errors a user can fix. Each renders as one line: where, then what is wrong."""
from __future__ import annotations

import reprlib

# An error line echoes what the user wrote; it must stay one line and short whatever that was.
ECHO_MAX = 80          # characters of an echoed value
PART_MAX = 200         # characters of the file, object or field part
LINE_MAX = 1000        # characters of the whole line

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxtuple, _repr.maxdict = 3, 4, 4, 4
_repr.maxset = _repr.maxfrozenset = _repr.maxdeque = _repr.maxarray = 4
_repr.maxstring, _repr.maxlong, _repr.maxother = ECHO_MAX, 40, ECHO_MAX


def one_line(text: str, limit: int = LINE_MAX) -> str:
    """text with control characters escaped (no newline survives), cut to limit with an ellipsis."""
    text = str(text)
    if len(text) > 4 * limit:
        text = text[:4 * limit]
    out = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                  for ch in text)
    return out if len(out) <= limit else out[:limit - 1] + "…"


def echo(value, limit: int = ECHO_MAX) -> str:
    """A bounded repr of a value a user wrote (a huge or self-referencing structure too)."""
    try:
        text = _repr.repr(value)
    except Exception:           # a repr that fails must not turn an error into a traceback
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)


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
        parts = [one_line(p, PART_MAX) for p in (self.file, self.obj, self.field) if p]
        parts.append(one_line(self.message, LINE_MAX))
        return one_line(": ".join(parts), LINE_MAX)


class InvalidError(LabError):
    """Like the API server's 422 Unprocessable Entity: a field has a value it may not have."""

    def __init__(self, message: str, *, value=None, **where):
        if value is not None:
            message = f"Invalid value: {echo(value)}: {message}"
        super().__init__(message, **where)


class NotFoundError(LabError):
    exit_code = 3


class StateError(LabError):
    """The machine is not in the state a command needs (lab already up, not up, not root)."""

    exit_code = 4
