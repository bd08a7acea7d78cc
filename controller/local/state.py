"""The local platform's status store: one JSON file per rollout, plus its commands and events.

The status file is what makes `local run` restart-safe: it is written atomically (temp file,
fsync, rename) *before* any action is carried out, so a SIGKILL at any instant leaves either the
previous or the new status on disk, never half of one. User commands (`modelrollout promote …`)
are small files dropped into a per-rollout folder; each carries a time-ordered id, and the status
records the last id carried out, so a command is applied once even if the runner dies between
saving the status and deleting the command file.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from canary.decision.engine import Command, CommandKind, RecordEvent
from canary.decision.spec import RolloutStatus
from canary.traffic.atomic_file import atomic_write


class StateError(RuntimeError):
    """A status file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class PendingCommand:
    id: str
    command: Command


class StateStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _status_path(self, name: str) -> Path:
        return self.root / f"{name}.status.json"

    def _commands_dir(self, name: str) -> Path:
        return self.root / f"{name}.commands"

    def _events_path(self, name: str) -> Path:
        return self.root / f"{name}.events.jsonl"

    # -- status ---------------------------------------------------------------------------------

    def load(self, name: str) -> RolloutStatus:
        path = self._status_path(name)
        if not path.exists():
            return RolloutStatus()
        try:
            return RolloutStatus.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as err:
            first = str(err).splitlines()[0]
            raise StateError(f"{path}: unreadable status ({first}); move it away to start this rollout afresh") from None

    def save(self, name: str, status: RolloutStatus) -> None:
        atomic_write(self._status_path(name), status.model_dump_json(by_alias=True, indent=1))

    def names(self) -> list[str]:
        return sorted(p.name.removesuffix(".status.json") for p in self.root.glob("*.status.json"))

    # -- commands -------------------------------------------------------------------------------

    def add_command(self, name: str, kind: CommandKind, full: bool = False) -> str:
        # Ids sort in the order commands were given: nanosecond time first, but always past the
        # last id seen (queued or already carried out), so a clock stepped back loses nothing.
        seen = [p.stem for p in self._commands_dir(name).glob("*.json")]
        seen.append(self.load(name).last_command_id or "")
        floor = int(max(seen).split("-")[0] or 0)
        command_id = f"{max(time.time_ns(), floor + 1):020d}-{secrets.token_hex(3)}"
        body = json.dumps({"kind": kind, "full": full})
        atomic_write(self._commands_dir(name) / f"{command_id}.json", body)
        return command_id

    def pending_commands(self, name: str, after: str | None) -> list[PendingCommand]:
        folder = self._commands_dir(name)
        if not folder.is_dir():
            return []
        pending = []
        for path in sorted(folder.glob("*.json")):
            command_id = path.stem
            if after is not None and command_id <= after:
                continue
            try:
                body = json.loads(path.read_text(encoding="utf-8"))
                pending.append(PendingCommand(command_id, Command(kind=body["kind"], full=bool(body.get("full")))))
            except (ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)  # not ours or truncated: a command is never half-applied
        return pending

    def drop_commands(self, name: str, upto: str) -> None:
        for path in self._commands_dir(name).glob("*.json"):
            if path.stem <= upto:
                path.unlink(missing_ok=True)

    # -- events ---------------------------------------------------------------------------------

    def record_event(self, name: str, event: RecordEvent, now: datetime | None = None) -> None:
        line = json.dumps(
            {
                "time": (now or datetime.now(timezone.utc)).isoformat(),
                "type": event.type,
                "reason": event.reason,
                "message": event.message,
            }
        )
        path = self._events_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def events(self, name: str, limit: int = 50) -> list[dict]:
        path = self._events_path(name)
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()[-limit:]
        return [json.loads(line) for line in lines if line.strip()]
