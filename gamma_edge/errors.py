"""The one exception type for mistakes a user can make (a path, a name, a file)."""
from __future__ import annotations

import contextlib


class GammaUserError(ValueError):
    """A user's mistake, told in one sentence; the CLI prints it without a traceback."""


@contextlib.contextmanager
def user_errors():
    """Inside a CLI command: a GammaUserError becomes a one-line `Error: ...`, no traceback."""
    import click

    try:
        yield
    except GammaUserError as exc:
        raise click.ClickException(str(exc)) from None
