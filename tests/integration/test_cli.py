"""The CLI answers bad input and broken surroundings with one line naming the cause, exit 2,
and leaves rollout state as it was."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from canary.decision.spec import Phase, RolloutStatus
from controller.cli.main import app
from controller.local import mlflow_server, prometheus_server
from controller.local.home import LocalHome
from controller.local.ports import port_in_use
from controller.local.state import StateStore
from tests.fixtures.prometheus import free_port

runner = CliRunner()

ROLLOUT = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelRollout",
    "metadata": {"name": "cli"},
    "spec": {
        "model": {"name": "cli-model"},
        "analysis": {"metrics": [{"name": "p95", "template": "latency_p95", "maxIncrease": "50%"}]},
    },
}


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_lint_accepts_a_good_file(tmp_path):
    result = run("lint", "-f", write(tmp_path, ROLLOUT))
    assert result.exit_code == 0 and "cli: ok (1 checks)" in result.stdout


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("spec: [1, 2\n", ["malformed YAML"]),
        ("", ["no ModelRollout document"]),
        ({**ROLLOUT, "spec": {**ROLLOUT["spec"], "canary": {"steps": [50, 10]}}}, ["spec.canary.steps", "must increase"]),
        # The engine's model would read "10" as 10; the API server refuses it, so lint does too.
        ({**ROLLOUT, "spec": {**ROLLOUT["spec"], "canary": {"steps": ["10"]}}}, ["cli: spec.canary.steps[0]: '10' is not of type 'integer'"]),
        (
            {**ROLLOUT, "spec": {**ROLLOUT["spec"], "analysis": {"metrics": [{"name": "x", "template": "nope", "max": 1}]}}},
            ["unknown template 'nope'"],
        ),
        (  # user text is printed as it is, never read as rich markup
            {**ROLLOUT, "spec": {**ROLLOUT["spec"], "analysis": {"metrics": [{"name": "x", "template": "[red]nope", "max": 1}]}}},
            ["unknown template '[red]nope'"],
        ),
    ],
)
def test_lint_rejects_bad_files(tmp_path, content, fragments):
    one_line_error(run("lint", "-f", write(tmp_path, content)), *fragments)


def test_missing_file(tmp_path):
    one_line_error(run("lint", "-f", tmp_path / "absent.yaml"), "absent.yaml: file not found")


def test_run_without_services_says_how_to_start_them(tmp_path):
    one_line_error(run("local", "run", "-f", write(tmp_path, ROLLOUT), "--home", tmp_path / "home"), "modelrollout local up")


def test_bad_tick(tmp_path):
    one_line_error(run("local", "run", "-f", write(tmp_path, ROLLOUT), "--tick", "fast"), "--tick: invalid duration 'fast'")


def test_commands_name_unknown_rollouts(tmp_path):
    home = tmp_path / "home"
    StateStore(home / "state").save("known", RolloutStatus())
    for verb in ("promote", "abort", "pause", "resume", "retry", "undo"):
        one_line_error(run(verb, "typo", "--home", home), "no rollout named 'typo'", "known: known")
    assert not (home / "state" / "typo.commands").exists()


def test_commands_are_queued_for_the_runner(tmp_path):
    home = tmp_path / "home"
    store = StateStore(home / "state")
    store.save("r", RolloutStatus(phase=Phase.CANARY, step=0, candidate_version="2", stable_version="1"))
    assert run("promote", "r", "--full", "--home", home).exit_code == 0
    assert run("pause", "r", "--home", home).exit_code == 0
    pending = store.pending_commands("r", None)
    assert [(p.command.kind, p.command.full) for p in pending] == [("promote", True), ("pause", False)]


def test_status_shows_phase_checks_and_history(tmp_path):
    home = tmp_path / "home"
    status = RolloutStatus.model_validate(
        {
            "phase": "Canary", "step": 1, "stableVersion": "1", "candidateVersion": "2",
            "weights": {"stable": 50, "candidate": 50},
            "checks": [{"name": "p95", "verdict": "fail", "candidate": 0.3, "baseline": 0.1, "threshold": "<= stable +50%", "failures": 1}],
            "history": [{"time": "2026-01-01T00:00:00Z", "from": "Idle", "to": "Shadow", "version": "2", "reason": "alias moved"}],
        }
    )  # fmt: skip
    StateStore(home / "state").save("r", status)
    result = run("status", "r", "--home", home)
    assert result.exit_code == 0
    out = " ".join(result.stdout.split())
    for fragment in ("Canary step 2 (50%)", "stable v1", "candidate v2", "p95 fail 0.3 0.1", "Idle Shadow v2 alias moved"):
        assert fragment in out, out


def test_status_without_rollouts(tmp_path):
    result = run("status", "--home", tmp_path / "empty")
    assert result.exit_code == 0 and "no rollouts" in result.stdout


def _seed_status(home: Path) -> bytes:
    store = StateStore(home / "state")
    store.save("cli", RolloutStatus(phase=Phase.CANARY, step=0, candidate_version="2", stable_version="1"))
    return (home / "state" / "cli.status.json").read_bytes()


def test_unreachable_mlflow_is_named_and_state_untouched(tmp_path, prometheus_server):
    home = tmp_path / "home"
    before = _seed_status(home)
    port = free_port()
    line = one_line_error(
        run("local", "run", "-f", write(tmp_path, ROLLOUT), "--home", home, "--once",
            "--mlflow-uri", f"http://127.0.0.1:{port}", "--prometheus-url", prometheus_server.url),
    )  # fmt: skip
    assert line.startswith("error: mlflow:") and f"127.0.0.1:{port}" in line
    assert (home / "state" / "cli.status.json").read_bytes() == before


def test_unreachable_prometheus_is_named(tmp_path, mlflow_server):
    home = tmp_path / "home"
    before = _seed_status(home)
    port = free_port()
    one_line_error(
        run("local", "run", "-f", write(tmp_path, ROLLOUT), "--home", home, "--once",
            "--mlflow-uri", mlflow_server.url, "--prometheus-url", f"http://127.0.0.1:{port}"),
        "metric 'p95'", f"127.0.0.1:{port}",
    )  # fmt: skip
    assert (home / "state" / "cli.status.json").read_bytes() == before


def test_promql_prometheus_rejects_is_named_before_anything_runs(tmp_path, mlflow_server, prometheus_server):
    home = tmp_path / "home"
    before = _seed_status(home)
    doc = {**ROLLOUT, "spec": {**ROLLOUT["spec"], "analysis": {"metrics": [
        {"name": "broken", "query": 'rate(x{rollout="{{ rollout }}"}[{{ interval }}]', "max": 1}]}}}  # fmt: skip
    one_line_error(
        run("local", "run", "-f", write(tmp_path, doc), "--home", home, "--once",
            "--mlflow-uri", mlflow_server.url, "--prometheus-url", prometheus_server.url),
        "metric 'broken'", "parse error",
    )  # fmt: skip
    assert (home / "state" / "cli.status.json").read_bytes() == before


def test_unreadable_status_file_is_named(tmp_path, mlflow_server, prometheus_server):
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    (home / "state" / "cli.status.json").write_text("{not json")
    one_line_error(
        run("local", "run", "-f", write(tmp_path, ROLLOUT), "--home", home, "--once",
            "--mlflow-uri", mlflow_server.url, "--prometheus-url", prometheus_server.url),
        "cli.status.json", "unreadable status",
    )  # fmt: skip
    assert (home / "state" / "cli.status.json").read_text() == "{not json"  # kept for the user to inspect


def test_local_up_is_idempotent_and_down_stops_everything(tmp_path):
    home = tmp_path / "home"
    first = run("local", "up", "--home", home, "--scrape-interval", "2s")
    try:
        assert first.exit_code == 0, first.stderr
        assert "started" in first.stdout and "MLflow      http://127.0.0.1:" in first.stdout
        urls = [line for line in first.stdout.splitlines() if "http" in line]
        second = run("local", "up", "--home", home)
        assert second.exit_code == 0 and "already running" in second.stdout
        assert [line for line in second.stdout.splitlines() if "http" in line] == urls

        # Both crash (SIGKILL): `local up` brings them back where every client still looks.
        where = LocalHome(home)
        crashed = {
            "mlflow": mlflow_server.read_pidfile(where.mlflow_dir),
            "prometheus": prometheus_server.read_pidfile(where.prometheus_dir),
        }
        os.killpg(crashed["mlflow"].pid, signal.SIGKILL)
        os.kill(crashed["prometheus"].pid, signal.SIGKILL)
        wait_until(lambda: where.dead_services() == ["mlflow", "prometheus"], "both services seen dead")
        third = run("local", "up", "--home", home)
        assert third.exit_code == 0 and "started" in third.stdout, third.stderr
        assert [line for line in third.stdout.splitlines() if "http" in line] == urls
        restarted = prometheus_server.read_pidfile(where.prometheus_dir)
        assert restarted is not None and restarted.pid != crashed["prometheus"].pid
        assert "scrape_interval: 2s" in (where.prometheus_dir / prometheus_server.CONFIG_NAME).read_text()

        # Crashed again, and something else took its port meanwhile: refused, naming both.
        port = crashed["prometheus"].port
        os.kill(restarted.pid, signal.SIGKILL)
        wait_until(lambda: where.dead_services() == ["prometheus"], "Prometheus seen dead")
        wait_until(lambda: not port_in_use("127.0.0.1", port), "its port released")
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            one_line_error(
                run("local", "up", "--home", home),
                f"cannot restart prometheus on its recorded address http://127.0.0.1:{port}", "services.json",
                f"port {port} is taken by another process",
            )  # fmt: skip
        assert json.loads(where.services_file.read_text())["prometheus"] == f"http://127.0.0.1:{port}"  # kept
        fourth = run("local", "up", "--home", home)  # the port is free again
        assert fourth.exit_code == 0 and [line for line in fourth.stdout.splitlines() if "http" in line] == urls
    finally:
        down = run("local", "down", "--home", home)
    assert down.exit_code == 0 and "prometheus" in down.stdout and "mlflow" in down.stdout
    one_line_error(run("local", "run", "-f", write(tmp_path, ROLLOUT), "--home", home), "modelrollout local up")


def test_kubectl_plugin_lints_with_the_same_rules(tmp_path):
    from controller.cli.kubectl import app as kubectl_app

    good = runner.invoke(kubectl_app, ["lint", "-f", str(write(tmp_path, ROLLOUT))])
    assert good.exit_code == 0 and "cli: ok" in good.stdout
    bad = runner.invoke(kubectl_app, ["lint", "-f", str(write(tmp_path, "spec: [1"))])
    one_line_error(bad, "malformed YAML")


def test_commands_that_cannot_apply_are_refused(tmp_path):
    home = tmp_path / "home"
    store = StateStore(home / "state")
    store.save("r", RolloutStatus(phase=Phase.SUCCEEDED, stable_version="2"))
    one_line_error(run("resume", "r", "--home", home), "r: resume: not possible in phase Succeeded")
    one_line_error(run("retry", "r", "--home", home), "retry: not possible in phase Succeeded")
    one_line_error(run("undo", "r", "--home", home), "undo: no promotion to undo")
    assert store.pending_commands("r", None) == []
    store.save("r", RolloutStatus(phase=Phase.SUCCEEDED, stable_version="2", candidate_version="2", previous_stable_version="1"))
    assert run("undo", "r", "--home", home).exit_code == 0
    assert [p.command.kind for p in store.pending_commands("r", None)] == ["undo"]
