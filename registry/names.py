"""Checks on the names and versions callers hand to the registry, done before any request.

MLflow would reject a bad alias too, but only after a round trip and with a message that does not
say which setting was wrong; a reserved alias (`latest`, `v3`) would even be accepted on read and
silently mean something else.
"""

from __future__ import annotations

import re

from registry.errors import VersionNotFound

_ALIAS = re.compile(r"^[\w\-]{1,255}$")
_RESERVED_VERSION_ALIAS = re.compile(r"^[vV]\d+$")


def check_alias(alias: str, what: str = "alias") -> str:
    """Return `alias` if MLflow can store it as an alias; ValueError naming `what` otherwise."""
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise ValueError(
            f"{what} {alias!r} is not a valid MLflow alias: use 1-255 letters, digits, '_' or '-'"
        )
    if alias.lower() == "latest" or _RESERVED_VERSION_ALIAS.match(alias):
        raise ValueError(f"{what} {alias!r} is reserved by MLflow ('latest' and 'v<digits>')")
    return alias


def normalise_version(model: str, version: str | int) -> str:
    """A model version as the `str` MLflow's REST API uses (a sqlite store hands out `int`).

    Anything but a positive integer cannot name a version, so it is reported as not found
    instead of letting the server answer with a parse error.
    """
    text = str(version).strip()
    if isinstance(version, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise VersionNotFound(
            f"model {model!r} has no version {version!r}: versions are positive integers"
        )
    return str(int(text))
