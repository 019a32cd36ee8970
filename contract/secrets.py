"""Credentials in addresses: hidden wherever an address is shown, filled in from where operators
keep them (docs/secrets.md).

`hide(address)` is the one rule for showing a camera, broker or webhook address: its user info
and the values of credential-like query keys become `***`. It reads the address as urllib and
FFmpeg read a URL (the user info ends at the last '@' of the authority, so user names holding '.'
or '@' are hidden whole), widened to the last '@' before the query: a password written with a
raw '/' or '#' (which ends the authority) is still hidden, at the price of hiding the host of a
rare URL with '@' in its path. Whatever is not a URL (a camera index, a file path) comes back as
it was.

`fill(text, where)` replaces `{NAME}` placeholders with the secret NAME: the file NAME in
$CREDENTIALS_DIRECTORY (systemd's LoadCredential, or Docker secrets' /run/secrets when the
variable points there), else the environment variable NAME. Addresses are shown from the text
before filling, so a filled-in secret is never shown, wherever in the address it went.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from contract.errors import UserError

MASK = "***"
# Query keys whose values are credentials: these names, and compound names ending in one of them
# (access_token, api_key, x-auth, passwd ...). Hiding a value too many costs a less telling line;
# hiding one too few leaks a secret into every log collector.
SECRET_KEYS = ("password", "passwd", "pass", "pwd", "token", "key", "auth", "secret", "signature", "sig",
               "user", "username", "login")
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"


def hide(address: str) -> str:
    """`address` with its credentials replaced by ***: the user info (user and password) and the
    values of credential-like query keys; anything that is not a URL (no '://') unchanged."""
    text = str(address)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    head, mark, query = rest.partition("?")
    if "@" in head:
        head = MASK + "@" + head.rpartition("@")[2]
    if mark:
        query, hash_mark, fragment = query.partition("#")
        query = _hide_query(query) + hash_mark + fragment
    return f"{scheme}://{head}{mark}{query}"


def _hide_query(query: str) -> str:
    """Each `key=value` pair kept as written (order, encoding), credential values masked."""
    if not query:
        return query
    pairs = []
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        pairs.append(f"{key}={MASK}" if sep and value and is_secret_key(key) else pair)
    return "&".join(pairs)


def is_secret_key(key: str) -> bool:
    name = unquote(key).strip().lower()
    return any(name == word or name.endswith(word) for word in SECRET_KEYS)


def fill(text: str, where: str) -> str:
    """`text` with each `{NAME}` replaced by the secret NAME ('{{' and '}}' stand for braces);
    a secret that is nowhere is one sentence naming it (never a value) and `where` it was asked."""
    if "{" not in text and "}" not in text:
        return text

    def replace(match: re.Match) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return secret(match.group(1), where)

    return PLACEHOLDER.sub(replace, text)


def secret(name: str, where: str) -> str:
    """The secret NAME: the file NAME in $CREDENTIALS_DIRECTORY first (the operator put it there
    for this service alone), else the environment variable NAME. A file's last line break is not
    part of the secret (`echo pass > file` writes one)."""
    folder = os.environ.get(CREDENTIALS_DIRECTORY)
    if folder:
        path = Path(folder) / name
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"{where}: the secret {name} in ${CREDENTIALS_DIRECTORY} cannot be read "
                                f"({getattr(exc, 'strerror', None) or exc.__class__.__name__}); check the file's "
                                f"permissions") from None
    if name in os.environ:
        return os.environ[name]
    places = f"a file {name} in ${CREDENTIALS_DIRECTORY} ({folder})" if folder else \
        f"a file {name} in ${CREDENTIALS_DIRECTORY} (not set)"
    raise UserError(f"{where} asks for the secret {{{name}}}, which is neither an environment variable nor "
                    f"{places}; set one of them (docs/secrets.md)")


def read_secret_file(path: str | Path, option: str) -> str:
    """A secret given as a file (--mqtt-password-file): its text without the last line break."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{option} '{path}' cannot be read ({getattr(exc, 'strerror', None) or exc}); "
                        f"check the path and its permissions") from None
