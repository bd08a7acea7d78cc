"""Rollout outcomes written back to MLflow, where the people who promote models look.

Every function here is idempotent: the controller persists its decision first and carries out
actions after, so after a crash it repeats them. Repeating must not move an alias again (someone
may have moved it on since) nor rewrite a timestamp. Tags are written before the alias moves, so
anyone who sees the stable alias on a version also finds the tags that explain why.

Tag values are cut to 5000 characters: MLflow 3.17 accepts 100,000 for model version tags, but
MLflow 2.x servers reject anything over 5000, and a summary longer than that is unreadable anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import mlflow

from registry.errors import translated
from registry.names import check_alias, normalise_version

TAG_PREFIX = "modelrollout."
STATUS_TAG = f"{TAG_PREFIX}status"
REASON_TAG = f"{TAG_PREFIX}reason"
SUMMARY_TAG = f"{TAG_PREFIX}summary"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
ABORTED = "aborted"
# The offline gate failed: the version was judged on its MLflow metrics and never deployed.
REJECTED = "rejected"
# Superseded before it was judged: the candidate alias moved on. Not a verdict on the version.
SKIPPED = "skipped"
MAX_TAG_VALUE_CHARS = 5000

Failure = Literal["rolled_back", "aborted", "rejected", "skipped"]


def timestamp_tag(status: str) -> str:
    """The tag that records when `status` was first written, e.g. `modelrollout.promoted_at`."""
    return f"{TAG_PREFIX}{status}_at"


def truncate_tag_value(value: str, limit: int = MAX_TAG_VALUE_CHARS) -> str:
    """`value` cut to `limit` characters, ending with a marker that says how much was dropped."""
    if len(value) <= limit:
        return value
    # The marker's own length depends on the count it shows (99 -> 100 adds a digit): settle it.
    dropped = len(value) - limit
    while True:
        marker = f"…[truncated {dropped} chars]"
        kept = max(limit - len(marker), 0)
        if len(value) - kept == dropped:
            return value[:kept] + marker
        dropped = len(value) - kept


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_status(
    client: mlflow.MlflowClient,
    name: str,
    version: str,
    status: str,
    text_tags: dict[str, str],
    now: str | None,
) -> dict[str, str]:
    """Write status, its first-written timestamp and `text_tags`; skip what is already there.

    Returns the version's tags as they were before this call.
    """
    with translated(client, name, version):
        current = dict(client.get_model_version(name, version).tags or {})
        wanted = {STATUS_TAG: status, **{k: truncate_tag_value(v) for k, v in text_tags.items()}}
        if not (current.get(STATUS_TAG) == status and current.get(timestamp_tag(status))):
            wanted[timestamp_tag(status)] = now or _utc_now()
        # Status last: a crash part-way leaves the old status, so a retry writes everything.
        for key in sorted(wanted, key=lambda k: k == STATUS_TAG):
            if current.get(key) != wanted[key]:
                client.set_model_version_tag(name, version, key, wanted[key])
    return current


def promote(
    client: mlflow.MlflowClient,
    name: str,
    version: str | int,
    stable_alias: str,
    summary: str,
    *,
    now: str | None = None,
) -> bool:
    """Record `version` as promoted and point `stable_alias` at it; True if the alias moved.

    The alias is set only when it points elsewhere (or nowhere), so a repeat after a crash never
    moves it again. A reason left by an earlier rollback of the same version is removed, since it
    no longer explains the status.
    """
    check_alias(stable_alias, "stable_alias")
    version = normalise_version(name, version)
    before = _write_status(client, name, version, PROMOTED, {SUMMARY_TAG: summary}, now)
    with translated(client, name, version):
        if REASON_TAG in before:
            client.delete_model_version_tag(name, version, REASON_TAG)
        aliases = client.get_registered_model(name).aliases or {}
        if str(aliases.get(stable_alias)) == version:
            return False
        client.set_registered_model_alias(name, stable_alias, version)
    return True


def mark(
    client: mlflow.MlflowClient,
    name: str,
    version: str | int,
    status: Failure,
    reason: str,
    *,
    now: str | None = None,
) -> None:
    """Record that the rollout of `version` was rolled back, aborted, rejected (by the offline
    gate, before any traffic) or skipped (the candidate alias moved on before it was judged), and why.

    Aliases are left alone: moving the candidate alias away is the user's call, and the stable
    alias never pointed at a version that was not promoted.
    """
    if status not in (ROLLED_BACK, ABORTED, REJECTED, SKIPPED):
        raise ValueError(f"status must be one of {ROLLED_BACK!r}, {ABORTED!r}, {REJECTED!r}, {SKIPPED!r}, got {status!r}")
    version = normalise_version(name, version)
    _write_status(client, name, version, status, {REASON_TAG: reason}, now)


def outcome(client: mlflow.MlflowClient, name: str, version: str | int) -> str | None:
    """The recorded outcome of `version` (`promoted`, `rolled_back`, `aborted`, `rejected`, `skipped`), None if none."""
    version = normalise_version(name, version)
    with translated(client, name, version):
        return (client.get_model_version(name, version).tags or {}).get(STATUS_TAG)


def recorded(client: mlflow.MlflowClient, name: str, version: str | int) -> tuple[str | None, str | None]:
    """The recorded outcome of `version` and its reason, so a caller can tell *which* rollback
    a `rolled_back` tag belongs to (a version may be rolled back more than once)."""
    version = normalise_version(name, version)
    with translated(client, name, version):
        tags = client.get_model_version(name, version).tags or {}
    return tags.get(STATUS_TAG), tags.get(REASON_TAG)
