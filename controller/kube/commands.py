"""User commands on a ModelRollout custom resource: two annotations, so plain `kubectl` can send them.

    metadata.annotations:
      modelrollout.io/command: promote        # promote | promote-full | abort | pause | resume | retry | undo
      modelrollout.io/command-id: "1764358800"  # any value not used by the previous command

The `kubectl modelrollout` verbs write exactly this merge patch (`command_patch`), so

    kubectl annotate mro iris --overwrite modelrollout.io/command=abort modelrollout.io/command-id=$(date +%s)

does the same as `kubectl modelrollout abort iris`. Why annotations and an id: a command is an
event, not a desired state, and must be carried out exactly once. The operator saves the id in
`status.lastCommandId` together with the status the command produced (one write), and only then
removes the annotations; an operator killed in between finds the id already recorded and just
removes them. The removal is a JSON patch that first tests the id, so a newer command written in
the meantime is never lost.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from canary.decision.engine import Command, CommandKind

COMMAND_ANNOTATION = "modelrollout.io/command"
COMMAND_ID_ANNOTATION = "modelrollout.io/command-id"
FULL_SUFFIX = "-full"  # `promote-full`: straight to Promoting (`kubectl modelrollout promote --full`)
VERBS: tuple[str, ...] = (*get_args(CommandKind), f"promote{FULL_SUFFIX}")


@dataclass(frozen=True)
class CommandRequest:
    """A command found on the resource: either a command to carry out, or why it cannot be."""

    id: str
    command: Command | None
    problem: str | None = None


def verb(kind: CommandKind, full: bool = False) -> str:
    if full and kind != "promote":
        raise ValueError(f"only promote has a --full form, not {kind!r}")
    return f"{kind}{FULL_SUFFIX}" if full else kind


def new_command_id() -> str:
    """Time-ordered and unique enough for one resource: nanoseconds plus a random suffix."""
    return f"{time.time_ns():020d}-{secrets.token_hex(3)}"


def command_patch(kind: CommandKind, full: bool = False, command_id: str | None = None) -> dict[str, Any]:
    """The merge patch that sends a command (the body of `kubectl patch --type=merge`)."""
    return {
        "metadata": {
            "annotations": {
                COMMAND_ANNOTATION: verb(kind, full),
                COMMAND_ID_ANNOTATION: command_id or new_command_id(),
            }
        }
    }


def read_command(annotations: Mapping[str, str] | None) -> CommandRequest | None:
    """The command in a resource's annotations, or None when there is none."""
    annotations = annotations or {}
    if COMMAND_ANNOTATION not in annotations:
        return None
    value = annotations[COMMAND_ANNOTATION].strip()
    command_id = annotations.get(COMMAND_ID_ANNOTATION, "").strip()
    if not command_id:
        return CommandRequest(
            "",
            None,
            f"command {value!r} has no {COMMAND_ID_ANNOTATION} annotation (any value not used before; "
            "it makes sure the command is carried out once)",
        )
    if value not in VERBS:
        return CommandRequest(command_id, None, f"unknown command {value!r} (one of: {', '.join(VERBS)})")
    full = value.endswith(FULL_SUFFIX)
    kind = value.removesuffix(FULL_SUFFIX)
    return CommandRequest(command_id, Command(kind=kind, full=full))  # type: ignore[arg-type]


def clear_patch(command_id: str) -> list[dict[str, Any]]:
    """A JSON patch removing the command annotations, only if they still carry `command_id`."""
    base = "/metadata/annotations/"
    escaped = [name.replace("~", "~0").replace("/", "~1") for name in (COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION)]
    operations: list[dict[str, Any]] = []
    if command_id:
        operations.append({"op": "test", "path": base + escaped[1], "value": command_id})
    operations.append({"op": "remove", "path": base + escaped[0]})
    if command_id:
        operations.append({"op": "remove", "path": base + escaped[1]})
    return operations
