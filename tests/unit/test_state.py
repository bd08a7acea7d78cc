"""The local status store: atomic status files and commands applied once, in order."""

from __future__ import annotations

import json
import time

import pytest

from canary.decision.spec import Phase, RolloutStatus
from controller.local.state import StateError, StateStore


def test_status_round_trip_and_default(tmp_path):
    store = StateStore(tmp_path)
    assert store.load("r") == RolloutStatus()
    status = RolloutStatus(phase=Phase.CANARY, step=1, candidate_version="2")
    store.save("r", status)
    assert store.load("r") == status
    assert store.names() == ["r"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


def test_unreadable_status_names_the_file(tmp_path):
    (tmp_path / "r.status.json").write_text('{"phase": "Sideways"}')
    with pytest.raises(StateError, match=r"r.status.json: unreadable status"):
        StateStore(tmp_path).load("r")


def test_commands_come_back_in_order_and_once(tmp_path):
    store = StateStore(tmp_path)
    first = store.add_command("r", "pause")
    second = store.add_command("r", "promote", full=True)
    assert first < second
    pending = store.pending_commands("r", None)
    assert [(p.command.kind, p.command.full) for p in pending] == [("pause", False), ("promote", True)]
    # Once the status records the last id carried out, those commands are never handed out again,
    # even if deleting their files did not happen (a crash between save and delete).
    assert store.pending_commands("r", second) == []
    store.drop_commands("r", first)
    assert [p.id for p in store.pending_commands("r", None)] == [second]


def test_new_command_sorts_after_the_last_applied_even_if_the_clock_went_back(tmp_path):
    store = StateStore(tmp_path)
    future = f"{time.time_ns() + 3600 * 10**9:020d}-abcdef"  # applied before the clock was set back an hour
    store.save("r", RolloutStatus(last_command_id=future))
    command_id = store.add_command("r", "resume")
    assert command_id > future
    assert [p.id for p in store.pending_commands("r", future)] == [command_id]


def test_a_truncated_command_file_is_dropped_not_applied(tmp_path):
    store = StateStore(tmp_path)
    store.add_command("r", "abort")
    folder = tmp_path / "r.commands"
    (folder / "00000000000000000001-000000.json").write_text('{"kind": ')
    pending = store.pending_commands("r", None)
    assert [p.command.kind for p in pending] == ["abort"]
    assert len(list(folder.glob("*.json"))) == 1


def test_events_are_appended_as_json_lines(tmp_path):
    from canary.decision.engine import RecordEvent

    store = StateStore(tmp_path)
    store.record_event("r", RecordEvent("Normal", "Promoted", "v2 is the stable version"))
    store.record_event("r", RecordEvent("Warning", "RollingBack", "v3: latency"))
    assert [e["reason"] for e in store.events("r")] == ["Promoted", "RollingBack"]
    assert json.loads((tmp_path / "r.events.jsonl").read_text().splitlines()[0])["type"] == "Normal"
