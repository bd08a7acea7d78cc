"""The registry package against a real `mlflow server` (sqlite, proxied artifacts, 127.0.0.1).

Every test uses its own model names, since the server lives for the whole session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest

from controller.local.mlflow_server import (
    MlflowServer,
    MlflowServerError,
    read_pidfile,
)
from registry.artifacts import resolve_artifact_uri
from registry.connection import connect, fail_fast_environment
from registry.errors import RegistryError, RegistryUnavailable, VersionNotFound, translated
from registry.watcher import AliasMoved, RegistryWatcher, WatchedModel
from registry.writeback import (
    REASON_TAG,
    STATUS_TAG,
    SUMMARY_TAG,
    mark,
    outcome,
    promote,
    timestamp_tag,
)
from tests.fixtures.mlflow import RegisterModel, fit_iris, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class CountingClient(mlflow.MlflowClient):
    """The real client, counting the calls whose number the tests assert on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    def search_registered_models(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["search_registered_models"] += 1
        return super().search_registered_models(*args, **kwargs)

    def set_registered_model_alias(self, *args: Any, **kwargs: Any) -> None:
        self.calls["set_registered_model_alias"] += 1
        super().set_registered_model_alias(*args, **kwargs)


@pytest.fixture
def counting_client(mlflow_server: MlflowServer) -> CountingClient:
    return CountingClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


def tags_of(client: mlflow.MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, version).tags)


# --- watcher ---------------------------------------------------------------------------------


def test_candidate_alias_moves_are_reported_once(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name, bystander = unique("iris"), unique("other")
    v1, v2 = registered_model(name), registered_model(name)
    registered_model(bystander, alias="challenger")
    watched = WatchedModel(name)
    watcher = RegistryWatcher(mlflow_client, [watched])

    first = watcher.poll()
    assert first[name].exists
    assert first.candidate(watched) is None and first.stable(watched) is None
    assert bystander not in first  # only watched models are reported
    assert watcher.changes(first, watcher.poll()) == []

    mlflow_client.set_registered_model_alias(name, "challenger", v1)
    mlflow_client.set_registered_model_alias(name, "champion", v1)
    second = watcher.poll()
    assert second.candidate(watched) == "1" and second.stable(watched) == "1"
    assert watcher.changes(first, second) == [AliasMoved(name, "challenger", None, "1")]

    mlflow_client.set_registered_model_alias(name, "challenger", v2)
    third = watcher.poll()
    assert third[name].aliases == {"challenger": "2", "champion": "1"}
    assert watcher.changes(second, third) == [AliasMoved(name, "challenger", "1", "2")]
    # A stable-alias move is not a promotion event; nothing moved between equal snapshots.
    mlflow_client.set_registered_model_alias(name, "champion", v2)
    assert watcher.changes(third, watcher.poll()) == []


def test_first_poll_reports_a_candidate_set_before_the_watcher_started(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    registered_model(name, alias="challenger")
    watcher = RegistryWatcher(mlflow_client, [WatchedModel(name)])
    assert watcher.changes(None, watcher.poll()) == [AliasMoved(name, "challenger", None, "1")]


def test_custom_aliases_are_watched(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    registered_model(name, alias="candidate")
    watched = WatchedModel(name, candidate_alias="candidate", stable_alias="prod")
    snapshot = RegistryWatcher(mlflow_client, [watched]).poll()
    assert snapshot.candidate(watched) == "1"
    # Aliases are case-sensitive in MLflow.
    assert snapshot.candidate(WatchedModel(name, candidate_alias="Candidate")) is None


def test_stage_transitions_are_reported_when_a_candidate_stage_is_configured(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name = unique("staged")
    v1, v2 = registered_model(name), registered_model(name)
    watched = WatchedModel(name, candidate_stage="Staging")
    watcher = RegistryWatcher(mlflow_client, [watched])
    before = watcher.poll()

    with warnings.catch_warnings():  # stages are deprecated, and still what some teams use
        warnings.simplefilter("ignore", FutureWarning)
        mlflow_client.transition_model_version_stage(name, v1, "staging")  # any case works
        mlflow_client.transition_model_version_stage(name, v2, "Production")
        mlflow_client.set_registered_model_alias(name, "champion", v2)  # the stable is always the alias
        after_first = watcher.poll()
        mlflow_client.transition_model_version_stage(name, v2, "Staging")
        after_second = watcher.poll()

    assert after_first.candidate(watched) == "1" and after_first.stable(watched) == "2"
    assert watcher.changes(before, after_first) == [
        AliasMoved(name, "Staging", None, "1", via="stage")
    ]
    # The latest version in the stage is the candidate; v2 left Production.
    assert after_second.candidate(watched) == "2" and after_second.stable(watched) == "2"  # stage moves leave the alias
    assert watcher.changes(after_first, after_second) == [
        AliasMoved(name, "Staging", "1", "2", via="stage")
    ]


def test_poll_reads_only_the_watched_models(
    mlflow_server: MlflowServer, counting_client: CountingClient, registered_model: RegisterModel
) -> None:
    names = [unique(f"paged{i}") for i in range(5)]
    for index, name in enumerate(names):
        registered_model(name, alias="challenger" if index % 2 else None)
    registered_model(unique("unwatched"), alias="challenger")
    watched = [WatchedModel(name) for name in names]
    counting_client.calls.clear()

    snapshot = RegistryWatcher(counting_client, watched, page_size=2).poll()

    # One filtered search, in pages of 2: the rest of the registry is not read.
    assert counting_client.calls["search_registered_models"] == 3
    assert sorted(snapshot) == sorted(names)
    assert [snapshot.candidate(w) for w in watched] == [None, "1", None, "1", None]

    counting_client.calls.clear()
    RegistryWatcher(counting_client, watched).poll()
    assert counting_client.calls["search_registered_models"] == 1


def test_poll_pages_through_the_registry_when_a_name_cannot_be_filtered(
    mlflow_server: MlflowServer, counting_client: CountingClient, registered_model: RegisterModel
) -> None:
    quoted = unique("it's")
    plain = unique("plain")
    registered_model(quoted, alias="challenger")
    registered_model(plain)
    watched = [WatchedModel(quoted), WatchedModel(plain)]
    total = len(counting_client.search_registered_models(max_results=1000))
    assert 2 <= total < 1000
    counting_client.calls.clear()

    snapshot = RegistryWatcher(counting_client, watched, page_size=2).poll()

    assert counting_client.calls["search_registered_models"] == -(-total // 2)
    assert snapshot.candidate(watched[0]) == "1" and snapshot[plain].exists


def test_missing_and_deleted_models_read_as_absent(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    gone, never = unique("gone"), unique("never")
    registered_model(gone, alias="challenger")
    watched = [WatchedModel(gone), WatchedModel(never)]
    watcher = RegistryWatcher(mlflow_client, watched)
    before = watcher.poll()
    assert not before[never].exists and before.candidate(watched[1]) is None

    mlflow_client.delete_registered_model(gone)
    after = watcher.poll()
    assert not after[gone].exists
    assert watcher.changes(before, after) == [AliasMoved(gone, "challenger", "1", None)]


def test_alias_on_a_deleted_version(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    registered_model(name, alias="champion")
    doomed = registered_model(name, alias="challenger")
    watched = WatchedModel(name)
    watcher = RegistryWatcher(mlflow_client, [watched])
    before = watcher.poll()

    mlflow_client.delete_model_version(name, doomed)  # MLflow drops the aliases with it

    after = watcher.poll()
    assert after.candidate(watched) is None and after.stable(watched) == "1"
    assert watcher.changes(before, after) == [AliasMoved(name, "challenger", doomed, None)]
    for call in (
        lambda: resolve_artifact_uri(mlflow_client, name, doomed),
        lambda: promote(mlflow_client, name, doomed, "champion", "ok"),
        lambda: mark(mlflow_client, name, doomed, "rolled_back", "bad"),
        lambda: outcome(mlflow_client, name, doomed),
    ):
        with pytest.raises(VersionNotFound, match=rf"model '{name}' version {doomed} not found"):
            call()
    assert RegistryWatcher(mlflow_client, [watched]).poll().stable(watched) == "1"


# --- write-back ------------------------------------------------------------------------------


def test_promote_tags_first_and_moves_the_alias_only_once(
    counting_client: CountingClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    registered_model(name, alias="champion")
    v2 = registered_model(name, alias="challenger")
    counting_client.calls.clear()

    assert promote(counting_client, name, v2, "champion", "p99 -3%", now="2030-01-01T00:00:00Z")
    assert counting_client.get_registered_model(name).aliases["champion"] == v2
    assert tags_of(counting_client, name, v2) == {
        STATUS_TAG: "promoted",
        timestamp_tag("promoted"): "2030-01-01T00:00:00Z",
        SUMMARY_TAG: "p99 -3%",
    }

    # A repeat (after a crash) neither moves the alias again nor rewrites the timestamp.
    assert not promote(counting_client, name, int(v2), "champion", "p99 -3%", now="2031-01-01T00:00:00Z")
    assert counting_client.calls["set_registered_model_alias"] == 1
    assert tags_of(counting_client, name, v2)[timestamp_tag("promoted")] == "2030-01-01T00:00:00Z"


def test_promote_without_timestamp_uses_utc_now(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    version = registered_model(name)
    promote(mlflow_client, name, version, "champion", "first stable version")
    stamp = tags_of(mlflow_client, name, version)[timestamp_tag("promoted")]
    written = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - written).total_seconds()) < 120
    assert mlflow_client.get_registered_model(name).aliases == {"champion": version}


def test_mark_and_outcome_round_trip(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    version = registered_model(name, alias="challenger")
    assert outcome(mlflow_client, name, version) is None

    mark(mlflow_client, name, version, "rolled_back", "p99 latency 412ms > 250ms", now="2030-01-01T00:00:00Z")
    assert outcome(mlflow_client, name, version) == "rolled_back"
    mark(mlflow_client, name, version, "rolled_back", "p99 latency 412ms > 250ms", now="2031-01-01T00:00:00Z")
    assert tags_of(mlflow_client, name, version) == {
        STATUS_TAG: "rolled_back",
        REASON_TAG: "p99 latency 412ms > 250ms",
        timestamp_tag("rolled_back"): "2030-01-01T00:00:00Z",
    }
    # Marking never touches aliases.
    assert mlflow_client.get_registered_model(name).aliases == {"challenger": version}

    mark(mlflow_client, name, version, "aborted", "x" * 20_000)
    tags = tags_of(mlflow_client, name, version)
    assert outcome(mlflow_client, name, version) == "aborted"
    assert len(tags[REASON_TAG]) == 5000 and "truncated" in tags[REASON_TAG]

    # A later promotion of the same version drops the stale reason.
    promote(mlflow_client, name, version, "champion", "retried and passed")
    tags = tags_of(mlflow_client, name, version)
    assert outcome(mlflow_client, name, version) == "promoted" and REASON_TAG not in tags


def test_writeback_rejects_bad_input_before_calling_mlflow(
    counting_client: CountingClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    version = registered_model(name)
    with pytest.raises(ValueError, match="status must be one of 'rolled_back', 'aborted', 'rejected', 'skipped'"):
        mark(counting_client, name, version, "promoted", "no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        promote(counting_client, name, version, "latest", "no")
    with pytest.raises(ValueError, match="not a valid MLflow alias"):
        promote(counting_client, name, version, "champ ion", "no")
    with pytest.raises(VersionNotFound, match="versions are positive integers"):
        outcome(counting_client, name, "abc")
    assert counting_client.get_registered_model(name).aliases == {}
    assert outcome(counting_client, name, version) is None


def test_missing_model_and_missing_version_are_named(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name, absent = unique("iris"), unique("absent")
    registered_model(name)
    with pytest.raises(VersionNotFound, match=rf"model '{absent}' version 1 not found.*{absent}"):
        promote(mlflow_client, absent, "1", "champion", "x")
    with pytest.raises(VersionNotFound, match=rf"model '{name}' version 7 not found"):
        mark(mlflow_client, name, 7, "aborted", "x")
    with pytest.raises(VersionNotFound, match=rf"model '{name}' version 7 not found"):
        outcome(mlflow_client, name, "7")
    with pytest.raises(VersionNotFound, match=rf"model '{absent}' version 2 not found"):
        resolve_artifact_uri(mlflow_client, absent, 2)
    assert mlflow_client.get_registered_model(name).aliases == {}


# --- artifacts -------------------------------------------------------------------------------


def test_artifact_uri_loads_and_maps_onto_the_artifact_store(
    mlflow_server: MlflowServer, mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    from sklearn.datasets import load_iris

    name = unique("iris")
    # A freshly logged estimator (not the session's shared model), as a real candidate would be.
    version = registered_model(name, alias="challenger", estimator=fit_iris(C=10.0))
    features, labels = load_iris(return_X_y=True, as_frame=True)

    uri = resolve_artifact_uri(mlflow_client, name, version)
    assert uri.startswith("mlflow-artifacts:/")
    assert (mlflow.pyfunc.load_model(uri).predict(features) == labels).mean() > 0.9

    local = resolve_artifact_uri(mlflow_client, name, version, mlflow_server.artifacts_destination)
    assert Path(local).is_relative_to(mlflow_server.artifacts_destination)
    assert (Path(local) / "MLmodel").is_file()
    assert "cloudpickle" in (Path(local) / "MLmodel").read_text()
    assert (mlflow.pyfunc.load_model(local).predict(features) == labels).mean() > 0.9


# --- an MLflow that cannot be reached --------------------------------------------------------


def test_closed_port_raises_registry_unavailable_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in fail_fast_environment().items():
        monkeypatch.setenv(key, value)  # so that connect()'s process-wide change is undone
    url = f"http://127.0.0.1:{free_port()}"
    client = connect(url)
    calls = (
        lambda: RegistryWatcher(client, [WatchedModel("iris")]).poll(),
        lambda: promote(client, "iris", "1", "champion", "x"),
        lambda: mark(client, "iris", "1", "aborted", "x"),
        lambda: resolve_artifact_uri(client, "iris", "1"),
    )
    for call in calls:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as caught:
            call()
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"MLflow at {url} is unreachable: ")
        assert "Connection refused" in message


def test_silent_server_times_out_as_registry_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in fail_fast_environment().items():
        monkeypatch.setenv(key, value)
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = connect(url, timeout_s=1, max_retries=0)
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match=rf"MLflow at {url} is unreachable: .*timed out"):
            RegistryWatcher(client, [WatchedModel("iris")]).poll()
        assert time.monotonic() - started < 5


def test_server_side_rejection_is_a_registry_error(mlflow_client: mlflow.MlflowClient) -> None:
    # A request MLflow answers with HTTP 400 is neither "unavailable" nor "not found".
    with pytest.raises(RegistryError, match=rf"MLflow at {mlflow_client.tracking_uri} rejected") as caught:
        with translated(mlflow_client, "iris"):
            mlflow_client.search_registered_models(filter_string="name ~~ 'x'")
    assert type(caught.value) is RegistryError


# --- the server process ----------------------------------------------------------------------


def test_pidfile_describes_the_running_server(mlflow_server: MlflowServer) -> None:
    record = read_pidfile(mlflow_server.data_dir)
    assert record is not None and record.url == mlflow_server.url
    assert mlflow_server.is_running()
    # A second `up` for the same directory is refused instead of starting a twin.
    with pytest.raises(MlflowServerError, match="already running"):
        MlflowServer(mlflow_server.data_dir, free_port()).start(timeout=5)
    assert mlflow_server.is_running()


def test_stale_pidfile_reads_as_no_server(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    (tmp_path / "mlflow.pid").write_text(
        f'{{"pid": {finished.stdout.strip()}, "host": "127.0.0.1", "port": 1}}'
    )
    assert read_pidfile(tmp_path) is None
    (tmp_path / "mlflow.pid").write_text("not json")
    assert read_pidfile(tmp_path) is None
    assert not MlflowServer(tmp_path, 1).is_running()


def test_start_on_a_taken_port_fails_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = MlflowServer(tmp_path, port)
        started = time.monotonic()
        with pytest.raises(MlflowServerError, match=rf"port {port} on 127.0.0.1 is already in use"):
            server.start(timeout=30)
        assert time.monotonic() - started < 2
    assert not server.is_running() and read_pidfile(tmp_path) is None


def test_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    # The port is free when start() checks it and taken before uvicorn binds it (a race that
    # happens for real), so the server process exits on its own.
    port = free_port()
    server = MlflowServer(tmp_path, port)
    thief = socket.socket()
    stolen = threading.Event()

    def steal_port() -> None:
        deadline = time.monotonic() + 30
        while not (tmp_path / "mlflow.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        thief.bind(("127.0.0.1", port))
        thief.listen(1)
        stolen.set()

    stealer = threading.Thread(target=steal_port, daemon=True)
    stealer.start()
    try:
        # "exited with code", not "did not answer within": the death is seen, not waited out.
        with pytest.raises(MlflowServerError, match="exited with code") as caught:
            server.start(timeout=120)
        assert stolen.is_set()
    finally:
        stealer.join(timeout=5)
        thief.close()
    message = str(caught.value)
    assert f"last lines of {tmp_path / 'mlflow.log'}" in message
    assert "address already in use" in message.lower()  # the log tail names the cause
    assert not server.is_running() and not (tmp_path / "mlflow.pid").exists()


def test_start_timeout_stops_the_process(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path, free_port())
    with pytest.raises(MlflowServerError, match=r"did not answer .*/health within 0.5 s"):
        server.start(timeout=0.5)
    assert not server.is_running() and not (tmp_path / "mlflow.pid").exists()


def stop_in_another_process(data_dir: Path) -> str:
    """What `local down` does: stop the server through the pid file, from a fresh process."""
    down = subprocess.run(
        [sys.executable, "-c",
         "import sys; from controller.local.mlflow_server import stop_from_pidfile; "
         "print(stop_from_pidfile(sys.argv[1]))", str(data_dir)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )  # fmt: skip
    assert down.returncode == 0, down.stderr
    return down.stdout.strip()


def test_another_process_stops_the_server_through_the_pidfile(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "data", free_port())
    server.start(timeout=90)
    try:
        assert server.is_running()
        assert stop_in_another_process(server.data_dir) == "True"
        deadline = time.monotonic() + 10
        while server.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.is_running()
        assert read_pidfile(server.data_dir) is None
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        assert stop_in_another_process(server.data_dir) == "False"  # `down` twice is fine

        # The `mlflow server` wrapper dies alone (kill -9): its uvicorn worker still holds the
        # port, so the server still counts as running, and `down` still stops all of it.
        server.start(timeout=90)
        record = read_pidfile(server.data_dir)
        assert record is not None
        os.kill(record.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert read_pidfile(server.data_dir) == record
        assert stop_in_another_process(server.data_dir) == "True"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    finally:
        server.stop()
