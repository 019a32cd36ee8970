"""The one exception type for mistakes a user can make (a path, a name, a file)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path


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


def read_user_json(path: str | Path, what: str):
    """A JSON file a user gave us (`what` names it: "scene file", "datasets file", ...), or one sentence."""
    path = Path(path)
    if not path.is_file():
        raise GammaUserError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GammaUserError(f"{what} {path} is not valid JSON ({exc})") from None
