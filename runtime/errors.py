"""The one exception a user sees: a mistake of theirs, said in one sentence."""
from __future__ import annotations


class RuntimeUserError(Exception):
    """A user's mistake (missing file, unknown manifest, corrupt image, unreachable
    stream, bad option). The message is one sentence naming the thing and what to
    do; the CLI prints it without a traceback. Bugs of ours raise anything else."""
