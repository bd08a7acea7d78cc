"""The supervisor against real child processes: start, re-adopt, crash reports, stale records, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from controller.local.supervisor import ProcessRecord, Supervisor

PY = sys.executable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_server(port: int) -> list[str]:
    return [PY, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


def script(code: str) -> Callable[[int], list[str]]:
    """A builder for `python -c code PORT`: the port is an argument so records differ per port."""
    return lambda port: [PY, "-c", textwrap.dedent(code), str(port)]


def processes_running(argv: list[str]) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == argv and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    # Whatever a test left behind is stopped, through a fresh supervisor as a restarted controller would.
    if path.exists():
        Supervisor(path, stop_timeout=1.0).stop_all()


@pytest.fixture
def sup(state_dir: Path) -> Supervisor:
    return Supervisor(state_dir, stop_timeout=2.0, backoff_initial=0.3, backoff_max=1.0)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose pid a stale record will point at; it must survive."""
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(5)


def test_start_writes_record_and_serves(sup: Supervisor, state_dir: Path) -> None:
    record = sup.ensure("web", http_server, labels={"rollout": "iris"})
    wait_until(lambda: listening(record.port), what="http.server to listen")

    on_disk = json.loads((state_dir / "web.json").read_text())
    assert on_disk["name"] == "web"
    assert on_disk["pid"] == record.pid
    assert on_disk["port"] == record.port
    assert on_disk["argv"] == http_server(record.port)
    assert on_disk["labels"] == {"rollout": "iris"}
    assert on_disk["started_at"] <= time.time()
    assert Path(on_disk["log_path"]).parent == state_dir / "logs"
    assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]
    assert sup.alive("web")
    assert sup.exit_failure("web") is None
    assert [r.name for r in sup.records(rollout="iris")] == ["web"]
    assert sup.records(rollout="other") == []


def test_new_supervisor_adopts_live_process_without_duplicate(sup: Supervisor, state_dir: Path) -> None:
    first = sup.ensure("web", http_server)
    wait_until(lambda: listening(first.port), what="http.server to listen")

    restarted = Supervisor(state_dir)  # a controller started again on the same state directory
    again = restarted.ensure("web", http_server)

    assert again.pid == first.pid
    assert again.port == first.port
    assert len(processes_running(list(first.argv))) == 1
    assert restarted.alive("web")


def test_children_survive_controller_sigkill_and_are_adopted(state_dir: Path) -> None:
    controller = textwrap.dedent(
        f"""
        import sys, time
        from controller.local.supervisor import Supervisor
        sup = Supervisor({str(state_dir)!r})
        rec = sup.ensure("web", lambda port: [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)])
        print(rec.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([PY, "-c", controller], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        child_pid = int(proc.stdout.readline())
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the controller
        proc.wait(5)

    assert psutil.Process(child_pid).is_running()
    adopted = Supervisor(state_dir).ensure("web", http_server)
    assert adopted.pid == child_pid
    wait_until(lambda: listening(adopted.port), what="the adopted server to listen")


def test_dead_process_reports_exit_code_and_last_stderr_line(sup: Supervisor) -> None:
    crash = script(
        """
        import sys
        print("some stdout noise")
        print("loading model", file=sys.stderr)
        print("ValueError: no model at /nowhere", file=sys.stderr)
        print("  ", file=sys.stderr)
        sys.exit(3)
        """
    )
    sup.ensure("crash", crash)
    wait_until(lambda: not sup.alive("crash"), what="the crashing process to be seen dead")

    assert sup.exit_failure("crash") == "exited (code 3): ValueError: no model at /nowhere"
    record = sup.get("crash")
    assert record is not None and record.dead and record.exit_code == 3


def test_killed_process_and_silent_exit_are_described(sup: Supervisor) -> None:
    sleeper = sup.ensure("sleeper", script("import time; time.sleep(60)"))
    os.kill(sleeper.pid, signal.SIGKILL)
    wait_until(lambda: not sup.alive("sleeper"), what="the killed process to be seen dead")
    assert sup.exit_failure("sleeper") == "killed by SIGKILL with nothing on stderr"

    # Killed while busy: its last line is shown as the log's, not as the cause.
    busy = sup.ensure("busy", script('import sys, time; print("GET /ready 200 OK", file=sys.stderr, flush=True); time.sleep(60)'))
    wait_until(lambda: "200 OK" in Path(busy.log_path).read_text(), what="the busy process to log")
    os.kill(busy.pid, signal.SIGKILL)
    wait_until(lambda: not sup.alive("busy"), what="the busy process to be seen dead")
    assert sup.exit_failure("busy") == "killed by SIGKILL (last line of its log: GET /ready 200 OK)"

    sup.ensure("quiet", script("raise SystemExit(2)"))
    wait_until(lambda: not sup.alive("quiet"), what="the quiet process to be seen dead")
    assert sup.exit_failure("quiet") == "exited (code 2) with nothing on stderr"


def test_death_seen_by_a_restarted_supervisor(sup: Supervisor, state_dir: Path) -> None:
    sup.ensure("crash", script("import sys, time; time.sleep(0.3); sys.exit('fatal: port in use')"))
    restarted = Supervisor(state_dir)
    wait_until(lambda: not restarted.alive("crash"), what="the crash to be seen by the new supervisor")
    failure = restarted.exit_failure("crash")
    assert failure is not None and failure.endswith(": fatal: port in use")


def test_crashed_process_restarts_at_once_then_after_backoff_on_same_port(state_dir: Path) -> None:
    sup = Supervisor(state_dir, backoff_initial=1.0)
    crash = script("import sys; sys.exit('boom')")
    first = sup.ensure("crash", crash)
    wait_until(lambda: not sup.alive("crash"), what="the first crash")

    # A first crash is restarted by the next ensure, without waiting: clients of a router are
    # refused until it is back.
    second = sup.ensure("crash", crash)
    assert second.pid != first.pid and second.port == first.port
    assert second.restarts == 1
    assert second.failure == "exited (code 1): boom"  # the reason stays until a clean start
    wait_until(lambda: not sup.alive("crash"), what="the second crash")
    assert Path(second.log_path + ".1").read_text().strip() == "boom"  # previous run's log kept

    held = sup.ensure("crash", crash)  # crashing again: inside the back-off, stays dead
    assert held.dead and held.pid == second.pid and held.failure == "exited (code 1): boom"

    wait_until(lambda: sup.ensure("crash", crash).pid != second.pid, timeout=5, what="the restart after the back-off")
    third = sup.get("crash")
    assert third is not None and third.port == first.port and third.restarts == 2


def test_spec_change_replaces_process(sup: Supervisor) -> None:
    first = sup.ensure("web", http_server, env={"MODE": "a"})
    same = sup.ensure("web", http_server, env={"MODE": "a"})
    assert same.pid == first.pid

    changed = sup.ensure("web", http_server, env={"MODE": "b"})
    assert changed.pid != first.pid
    wait_until(lambda: gone(first.pid), what="the replaced process to end")
    assert changed.env_digest != first.env_digest
    assert "MODE" not in json.dumps(changed.to_json())  # env values are not written to disk

    relabelled = sup.ensure("web", http_server, env={"MODE": "b"}, labels={"version": "2"})
    assert relabelled.pid != changed.pid


def test_env_overrides_reach_the_child(sup: Supervisor, tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    sup.ensure(
        "envdump",
        script(f"import os; open({str(out)!r}, 'w').write(os.environ['MLFLOW_TRACKING_URI'])"),
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"},
    )
    wait_until(lambda: not sup.alive("envdump"), what="the child to finish")
    assert out.read_text() == "http://127.0.0.1:5999"


def _stale_record(state_dir: Path, name: str, pid: int, argv: list[str]) -> None:
    record = ProcessRecord(
        name=name,
        pid=pid,
        create_time=time.time() - 3600,  # not the create time of whatever owns `pid` now
        port=1,
        argv=tuple(argv),
        started_at=time.time() - 3600,
        log_path=str(state_dir / "logs" / f"{name}.log"),
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / f"{name}.json").write_text(json.dumps(record.to_json()))


def test_record_with_reused_pid_is_not_adopted_nor_signalled(
    state_dir: Path, bystander: subprocess.Popen[bytes]
) -> None:
    _stale_record(state_dir, "web", bystander.pid, [PY, "-c", "import time; time.sleep(60)"])
    sup = Supervisor(state_dir)

    assert not sup.alive("web")
    fresh = sup.ensure("web", http_server)
    assert fresh.pid != bystander.pid
    wait_until(lambda: listening(fresh.port), what="the fresh server to listen")

    _stale_record(state_dir, "other", bystander.pid, [PY, "-c", "import time; time.sleep(60)"])
    sup.stop("other")  # the same argv but another create time: still not ours
    time.sleep(0.2)
    assert bystander.poll() is None
    assert not (state_dir / "other.json").exists()


def test_record_with_dead_pid_is_not_adopted(state_dir: Path) -> None:
    finished = subprocess.Popen([PY, "-c", "pass"])
    finished.wait(5)
    _stale_record(state_dir, "web", finished.pid, [PY, "-c", "pass"])

    sup = Supervisor(state_dir)
    record = sup.get("web")
    assert record is not None and record.dead
    assert record.failure == "exited (code unknown) with nothing on stderr"
    fresh = sup.ensure("web", http_server)
    assert fresh.pid != finished.pid and not fresh.dead
    assert fresh.port >= 1024  # the stale record's port 1 is never reused


def test_stop_terminates_then_kills_leader_and_descendants(sup: Supervisor) -> None:
    stubborn = script(
        f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # In a session of its own: only the supervisor's sweep of descendants can reach it.
        child = subprocess.Popen([{PY!r}, "-c", "import time; time.sleep(60)"], start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    fast = Supervisor(sup.state_dir, stop_timeout=0.5)
    record = fast.ensure("stubborn", stubborn)
    out = Path(record.log_path).with_suffix(".out")
    wait_until(lambda: out.read_text().strip(), what="the grandchild pid")
    grandchild = int(out.read_text())

    started = time.monotonic()
    fast.stop("stubborn")
    assert time.monotonic() - started < 3
    wait_until(lambda: gone(record.pid) and gone(grandchild), what="leader and grandchild to die")
    assert fast.get("stubborn") is None
    assert not fast.alive("stubborn")


def test_stop_unknown_is_harmless_and_stop_all_stops_everything(sup: Supervisor) -> None:
    sup.stop("never-started")
    a = sup.ensure("a", http_server)
    b = sup.ensure("b", http_server)
    assert a.port != b.port
    sup.stop_all()
    wait_until(lambda: gone(a.pid) and gone(b.pid), what="all processes to end")
    assert sup.records() == []


def test_sigterm_is_graceful(sup: Supervisor, tmp_path: Path) -> None:
    marker = tmp_path / "graceful"
    graceful = script(
        f"""
        import signal, sys, time
        def bye(*_):
            open({str(marker)!r}, "w").write("bye")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("handler installed", flush=True)
        time.sleep(60)
        """
    )
    record = sup.ensure("graceful", graceful)
    out = Path(record.log_path).with_suffix(".out")
    wait_until(lambda: out.read_text().strip(), what="the handler to be installed")
    sup.stop("graceful")
    assert marker.read_text() == "bye"


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "-lead", "x" * 201, "sp ace", "ünï"])
def test_bad_names_are_rejected(sup: Supervisor, name: str) -> None:
    with pytest.raises(ValueError, match="invalid process name"):
        sup.ensure(name, http_server)
    with pytest.raises(ValueError, match="invalid process name"):
        sup.stop(name)


def test_corrupt_record_is_reported_not_overwritten(state_dir: Path) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / "web.json").write_text('{"name": "web", "pid": ')
    sup = Supervisor(state_dir)
    with pytest.raises(ValueError, match=r"corrupt process record .*web\.json"):
        sup.ensure("web", http_server)
    # Only that name is blocked: the others still start, list and stop.
    other = sup.ensure("other", http_server)
    assert [r.name for r in sup.records()] == ["other"]
    sup.stop_all()
    wait_until(lambda: gone(other.pid), what="the other process to end")
    assert (state_dir / "web.json").exists()
