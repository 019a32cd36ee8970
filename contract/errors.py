"""The one exception a user sees: a mistake of theirs, said in one sentence, and the one way a
command turns it into a CLI error (docs/design.md, "Errors")."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path


class UserError(Exception):
    """A user's mistake (missing file, unknown scene or manifest, corrupt image, unreachable
    stream, bad option). The message is one sentence naming the thing and what to do; the CLI
    prints it without a traceback. Bugs of ours raise anything else."""


@contextlib.contextmanager
def user_errors():
    """Inside a CLI command: a UserError becomes a one-line `Error: ...` and exit status 1."""
    import click

    try:
        yield
    except UserError as exc:
        raise click.ClickException(str(exc)) from None


def read_user_json(path: str | Path, what: str):
    """A JSON file a user gave us (`what` names it: "scene file", "datasets file", ...), or one sentence."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is not valid JSON ({exc})") from None
