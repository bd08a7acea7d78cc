"""What `local up` and the keeper of `local run` read from the home: recorded services, and which
of them are dead. (Starting and killing the real services: tests/integration/test_cli.py and
tests/e2e/test_rollouts.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from controller.local.home import LocalHome
from controller.local.service_keeper import ServiceKeeper


def test_nothing_is_dead_without_services_json(tmp_path: Path) -> None:
    # Never started, or `local down` ran (it removes the file first): nothing to bring back.
    home = LocalHome(tmp_path)
    assert home.dead_services() == [] and home.recorded() == {}
    assert ServiceKeeper(home).check() == []


def test_recorded_services_without_a_live_process_are_dead(tmp_path: Path) -> None:
    home = LocalHome(tmp_path)
    record = {"mlflow": "http://127.0.0.1:5000", "prometheus": "http://127.0.0.1:9090", "scrape_interval": "2s"}
    home.services_file.write_text(json.dumps(record))
    assert home.recorded() == record
    assert home.dead_services() == ["mlflow", "prometheus"]  # no pid files: neither runs


def test_an_unreadable_services_json_records_nothing(tmp_path: Path) -> None:
    home = LocalHome(tmp_path)
    home.services_file.write_text("{not json")
    assert home.recorded() == {}
    home.services_file.write_text('["a list"]')
    assert home.recorded() == {}
