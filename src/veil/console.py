"""The error boundary of every ``veil`` command: one printer, one mapping from errors to exit codes.

Every command function is wrapped in :func:`command`. What it raises is printed as one line,
``error: <message>``, without a traceback, and the process exits with

- 2 for bad input (`veil.errors.InputError` and its kinds: a missing, damaged or unsupported
  file, a bad option, a wrong key or checkpoint);
- 1 for a failure (any other `veil.errors.VeilError`, and errors of the operating system such as
  a full disk);
- 130 when interrupted (Ctrl-C).

Anything else is a bug in veil: it keeps its traceback (exit code 1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from veil.errors import InputError, VeilError

__all__ = ["err", "exit_code", "fail", "command", "print_error"]

err = Console(stderr=True, soft_wrap=True)
"""Where commands print what is not their result: progress, notes, errors."""

F = TypeVar("F", bound=Callable[..., Any])


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ends a command (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, VeilError):
        return exc.exit_code
    return 1


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename!r}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def print_error(message: str) -> None:
    """Print one error line (the message as it is: brackets in it are not markup)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def fail(exc: BaseException | str) -> NoReturn:
    """Print `exc` (or a message: bad input) as one line and exit with its code."""
    if isinstance(exc, str):
        exc = InputError(exc)
    print_error(_message(exc))
    raise typer.Exit(exit_code(exc))


def command(fn: F) -> F:
    """Wrap a command function in the error boundary."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (VeilError, OSError) as exc:
            fail(exc)
        except KeyboardInterrupt:
            err.print("interrupted; no partial output was left")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
