"""The operator SIGKILLed in each phase of a rollout, and its RBAC derived from the calls it made.

`modelrollout operator` watches every namespace, as installed, as a real process against a
private API emulator, with the KServe double, the session's Prometheus, the real comparator and
an MLflow server of this module's own, which the test stops: a rollout waits in Promoting or
RollingBack only while MLflow cannot take the write. Every crash is `os.kill(pid, SIGKILL)`: no
handler runs, nothing is flushed or released.

Why one test, two rollouts, two kills and three operator starts rather than a test per phase:
each operator start costs seconds (imports, kopf's first watch, the first registry poll) and each
rollout seconds more to reach a phase. So the two rollouts are placed so that each kill lands in
two phases at once -- kill 1 with one rollout in Shadow and the other at canary step 1, kill 2
with one in Promoting and the other in RollingBack (MLflow down) -- and each next operator takes
over both. Every phase is still a separate crash and restart whose status at the kill is kept
and checked at the end: the history at the kill is a prefix of the final one, no gaps, no phase
entered twice, the alias moved once, one Promoted and one RolledBack Event.

Each kill lands at a known point: the test waits until the persisted status shows the phases and
kills at once; with no operator running nothing else writes the status, so what the test reads
after the kill is what the next operator starts from. The canary that is to breach is paused by
a user command sent while no operator runs (the next operator carries commands out before it
judges an overdue window), so it neither passes nor breaches while MLflow is still up; it is
resumed, its candidate now slow, once MLflow is down.

What the runs showed, and the test is built around (reported, not the test's to change):
- The first two operators use kopf peering (`ClusterKopfPeering`), as installed. A successor
  finds the killed one's record still "alive" and kopf pauses every operator of the same
  priority until that record expires: the operator sets its lifetime to PEERING_LIFETIME_S (20 s;
  kopf's default of 60 s left rollouts unattended for a minute after a crash), and the second
  operator must take over within it. The third runs `--standalone`, to keep the test short.
- An operator started *during* an MLflow outage cannot render a rollout's checks (the KServe
  platform learns version -> revision from the routing it applies, which needs the artifact URIs
  from MLflow), so a rollout mid-canary holds with AnalysisError until MLflow returns. Hence MLflow
  is stopped under the operator that then takes both rollouts into Promoting and RollingBack;
  the one started during the outage only has to hold them, which needs no analysis.
- An Event is posted after the status is saved: a kill in between loses it (RolloutStarted, at
  kill 1, often). Events are checked "at most once", the outcome Events "exactly once".

The last test maps the operator's recorded API calls (the emulator records them by the bearer
token of the operator's kubeconfig, see tests/fixtures/operator.py) to RBAC triples and checks
them against the ClusterRole in manifests/. It reads what the rollout test made this module's
private emulator record, so it runs after it (pytest runs a file's tests in order).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.kube.commands import command_patch
from controller.kube.operator import PEERING_LIFETIME_S
from controller.local import mlflow_server
from controller.local.mlflow_server import MlflowServer
from controller.local.ports import free_port
from registry.connection import fail_fast_environment
from tests.fixtures.faults import MlflowAccessLog
from tests.fixtures.kserve_stack import Comparator
from tests.fixtures.kube import MODELROLLOUT_CRD, start_kube_api
from tests.fixtures.mlflow import fit_iris, log_sklearn_model
from tests.fixtures.operator import (
    OPERATOR_USER,
    PEERING_GET,
    WATCHED_GETS,
    OperatorProcess,
    Stack,
    cluster_role_triples,
    rbac_check,
    serving_v1,
)
from tests.kube.server import EmulatorServer

MLFLOW_START_TIMEOUT_S = 90.0  # ~5 s idle; much more on two cores shared with other suites
ALIAS_WRITE = ("POST", "/api/2.0/mlflow/registered-models/alias")
TAG_WRITE = ("POST", "/api/2.0/mlflow/model-versions/set-tag")
GOOD, BAD = "iris", "breach"  # rollout (and InferenceService) names

# The rollout killed in each of its phases: long enough phases that the test sees each one.
# The rollout that is promoted: two canary steps leave MLflow's stop time to land before its
# promotion (see the test).
GOOD_SPEC: dict[str, Any] = {
    "shadow": {"enabled": True, "duration": "3s", "percent": 100},
    "canary": {"steps": [20, 60], "interval": "4s"},
    "progressDeadline": "90s",
}
# The rollout that breaches: no shadow; one step whose window outlasts the good rollout's start.
BAD_SPEC: dict[str, Any] = {
    "shadow": {"enabled": False},
    "canary": {"steps": [50], "interval": "8s"},
    "progressDeadline": "120s",
}


class RestartableMlflow:
    """This module's MLflow server, stopped and started again on the same port and data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = MlflowAccessLog(data_dir / mlflow_server.LOG_NAME)
        self.running = False

    def start(self) -> None:
        MlflowServer(self.data_dir, self.port).start(timeout=MLFLOW_START_TIMEOUT_S)
        self.running = True

    def stop(self) -> None:
        assert mlflow_server.stop_from_pidfile(self.data_dir), f"no MLflow server was running at {self.url}"
        self.running = False


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableMlflow]:
    """An MLflow server of this module's own (the test stops it); MLflow calls without a URI go to
    it while the module runs."""
    server = RestartableMlflow(tmp_path_factory.mktemp("mlflow"))
    env = pytest.MonkeyPatch()
    try:
        server.start()
        env.setenv("MLFLOW_TRACKING_URI", server.url)
        for key, value in fail_fast_environment(timeout_s=30, max_retries=1).items():
            env.setenv(key, value)
        yield server
    finally:
        env.undo()
        mlflow_server.stop_from_pidfile(server.data_dir)


@pytest.fixture(scope="module")
def model_uri(registry: RestartableMlflow) -> str:
    return log_sklearn_model(fit_iris())


@pytest.fixture(scope="module")
def other_model_uri(registry: RestartableMlflow) -> str:
    """A second logged model: its own storageUri, so the test can make it alone slow (the KServe
    double and the traffic tell versions apart by storageUri, and versions of one logged model
    share it)."""
    return log_sklearn_model(fit_iris(C=0.5))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """A private API emulator: the operator watches every namespace here, as installed, and finds
    only this module's objects; what it records is this module's calls alone."""
    server = start_kube_api(tmp_path_factory.mktemp("kube-api"))
    try:
        server.load_kserve_crd()
        server.load_crds([MODELROLLOUT_CRD])
        yield server
    finally:
        server.stop()


@pytest.fixture
def stack(cluster: EmulatorServer, registry: RestartableMlflow, prometheus_server: Any, knative_exporter: Any,
          comparator: Comparator, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:  # fmt: skip
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    namespace = f"{slug}-{secrets.token_hex(3)}"
    with httpx.Client(base_url=cluster.url, timeout=10.0) as http:
        created = http.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
        assert created.status_code == 201, created.text
    _, series = knative_exporter
    built = Stack(cluster, namespace, registry, prometheus_server, series, comparator, tmp_path)
    try:
        yield built
    finally:
        built.close()
        if not registry.running:  # a failed test may leave it down: the module's next test needs it
            registry.start()


# -- reads ------------------------------------------------------------------------------------


def transitions(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["from"], t["to"]) for t in status.get("history", [])]


def assert_no_gaps(history: list[dict[str, Any]]) -> None:
    """Each transition starts where the one before it ended: nothing was lost across the kills."""
    for before, after in itertools.pairwise(history):
        assert after["from"] == before["to"], f"gap: {before['to']} then {after['from']} -> {after['to']}"


def analysed(stack: Stack, name: str, phase: str, step: int | None) -> bool:
    """`name` is in `phase` at `step` with its candidate ready: its analysis window is running."""
    status = stack.status(name)
    return status.get("phase") == phase and status.get("step") == step and bool(status.get("windowStartedAt"))


def reasons(stack: Stack, name: str) -> list[str]:
    return [reason for _, reason, _ in stack.events(name)]


def modelrollout_tags(stack: Stack, version: str, rollout: str) -> dict[str, str]:
    return {k: v for k, v in stack.tags(version, rollout).items() if k.startswith("modelrollout.")}


# ---------------------------------------------------------------------------------------------


def test_operator_killed_in_every_phase_continues_each_rollout(
    stack: Stack, registry: RestartableMlflow, model_uri: str, other_model_uri: str
) -> None:
    stack.add_model(BAD)
    killed: list[tuple[str, dict[str, dict[str, Any]]]] = []  # (where, statuses at the kill)

    def kill(operator: OperatorProcess, where: str, expected: dict[str, tuple[str, int | None]]) -> None:
        """SIGKILL `operator`; the statuses it leaves must be `expected` (phase, canary step)."""
        operator.kill()
        statuses = {name: stack.status(name) for name in (GOOD, BAD)}
        for name, (phase, step) in expected.items():
            found = (statuses[name].get("phase"), statuses[name].get("step"))
            assert found == (phase, step), f"killed in {where}: {name} was {found}, not {(phase, step)}"
        killed.append((where, statuses))

    # 1. Both models serve v1. The breaching rollout starts its canary; once its first window
    #    runs, the good one enters Shadow, and the operator is killed: one rollout in Shadow,
    #    the other at canary step 1.
    first = stack.start_operator(peering=True, all_namespaces=True)
    v1, v2 = serving_v1(stack, model_uri, GOOD, **GOOD_SPEC)
    b1, b2 = serving_v1(stack, model_uri, BAD, candidate_uri=other_model_uri, **BAD_SPEC)
    uris = {(name, v): stack.uri(v, name) for name, v in ((GOOD, v1), (GOOD, v2), (BAD, b1), (BAD, b2))}
    assert uris[(BAD, b2)] not in (uris[(GOOD, v2)], uris[(BAD, b1)])  # slowed alone, later
    stack.alias("challenger", b2, BAD)
    stack.wait(lambda: analysed(stack, BAD, "Canary", 0), f"{BAD}'s first canary window")
    stack.alias("challenger", v2, GOOD)
    registry.access_log.mark()  # from here on, every registry write is the operator's
    stack.wait(lambda: stack.phase(GOOD) == "Shadow", f"{GOOD} in Shadow")
    kill(first, "Shadow / canary step 1", {GOOD: ("Shadow", None), BAD: ("Canary", 0)})
    # While no operator runs, a user pauses the canary: the next operator's first tick carries
    # the command out before it judges the overdue window, so this rollout waits for the test.
    stack.patch_rollout(command_patch("pause"), BAD)

    # 2. The next operator continues both: the shadow (its InferenceService on v2, the comparator
    #    told about it) goes on into the canary, the paused rollout stays paused. With the good
    #    rollout in its canary (its routing applied by this operator while MLflow was up), MLflow
    #    goes down; the breaching candidate turns slow and is resumed. One rollout passes its
    #    last step into Promoting, the other breaches into RollingBack; both wait for MLflow.
    killed_at = time.monotonic()
    second = stack.start_operator(peering=True, all_namespaces=True)
    stack.wait(lambda: stack.phase(BAD) == "Paused", f"{BAD} paused by the next operator", timeout=PEERING_LIFETIME_S + 60)
    # Paused by the killed operator's peering record for at most its lifetime, then at work.
    assert time.monotonic() - killed_at < PEERING_LIFETIME_S + 30
    shadow = stack.wait(lambda: stack.isvc(f"{GOOD}-shadow"), "the shadow InferenceService")
    assert shadow["spec"]["predictor"]["model"]["storageUri"] == uris[(GOOD, v2)]
    stack.wait(lambda: stack.phase(GOOD) != "Shadow" or httpx.get(f"{stack.comparator.url}/admin/shadows", headers=stack.comparator.admin_headers).json(),
               "the comparator knows the shadow (or the shadow is over)")  # fmt: skip
    stack.wait(lambda: stack.phase(GOOD) == "Canary", f"{GOOD} in its canary")
    registry.stop()
    stack.traffic.behave(uris[(BAD, b2)], latency_ms=400)
    stack.patch_rollout(command_patch("resume"), BAD)
    stack.wait(lambda: stack.phase(GOOD) == "Promoting" and stack.phase(BAD) == "RollingBack",
               f"{GOOD} Promoting and {BAD} RollingBack while MLflow is down", timeout=90)  # fmt: skip
    # The serving half is done, the registry half waits: the winner serves alone on each primary.
    for name, version in ((GOOD, v2), (BAD, b1)):
        stack.wait(lambda: stack.predictor(name)["model"]["storageUri"] == uris[(name, version)]
                   and "canaryTrafficPercent" not in stack.predictor(name), f"{name}'s primary on v{version} alone")  # fmt: skip
    kill(second, "Promoting / RollingBack", {GOOD: ("Promoting", None), BAD: ("RollingBack", None)})

    # 3. A new operator, started while MLflow is still down, holds both where they are; MLflow
    #    returns and each finishes: the promotion moves the alias once, the rollback marks v2.
    third = stack.start_operator(all_namespaces=True)
    held_until = time.monotonic() + 2.0
    while time.monotonic() < held_until:
        assert (stack.phase(GOOD), stack.phase(BAD)) == ("Promoting", "RollingBack"), third.log()
        time.sleep(0.2)
    registry.start()
    stack.wait(lambda: stack.phase(GOOD) == "Succeeded" and stack.phase(BAD) == "RolledBack",
               "both rollouts finished once MLflow is back", timeout=90)  # fmt: skip

    final = {name: stack.status(name) for name in (GOOD, BAD)}
    for where, statuses in killed:
        for name, at_kill in statuses.items():
            prefix = at_kill.get("history", [])
            assert final[name]["history"][: len(prefix)] == prefix, f"{name}: history changed since the kill in {where}"
    for name in (GOOD, BAD):
        assert_no_gaps(final[name]["history"])
    assert transitions(final[GOOD]) == [
        ("Idle", "Shadow"), ("Shadow", "Canary"), ("Canary", "Canary"), ("Canary", "Promoting"), ("Promoting", "Succeeded"),
    ]  # fmt: skip
    assert transitions(final[BAD]) == [
        ("Idle", "Canary"), ("Canary", "Paused"), ("Paused", "Canary"), ("Canary", "RollingBack"), ("RollingBack", "RolledBack"),
    ]  # fmt: skip
    assert "p95" in final[BAD]["message"], final[BAD]["message"]

    # MLflow: the champion moved once (the promotion), the outcomes recorded on each candidate.
    assert stack.champion(GOOD) == v2 and stack.champion(BAD) == b1
    assert registry.access_log.count(*ALIAS_WRITE) == 1
    tags = {GOOD: modelrollout_tags(stack, v2, GOOD), BAD: modelrollout_tags(stack, b2, BAD)}
    assert tags[GOOD]["modelrollout.status"] == "promoted" and tags[BAD]["modelrollout.status"] == "rolled_back"
    assert tags[BAD]["modelrollout.reason"] == final[BAD]["message"]
    # Every tag written once. Until the operator's next registry poll shows the alias moved, each
    # tick re-issues the promotion; it finds the tags and the alias in place and writes nothing
    # (the summary's duration ends when promotion was decided, so its text does not change).
    assert registry.access_log.count(*TAG_WRITE) == len(tags[GOOD]) + len(tags[BAD])

    # Events: each outcome announced once. The others at most once each: an Event is posted just
    # after the status is saved, so a kill in between loses it, and none may be posted again by
    # the operator that takes over.
    stack.wait(lambda: "Promoted" in reasons(stack, GOOD) and "RolledBack" in reasons(stack, BAD), "the final Events")
    time.sleep(1.0)
    at_most = {
        GOOD: {"RolloutStarted": 1, "StepAdvanced": 2, "Promoting": 1, "Promoted": 1, "RolledBack": 0},
        BAD: {"RolloutStarted": 1, "Paused": 1, "RolledBack": 1, "Promoting": 0, "Promoted": 0},
    }
    for name, limits in at_most.items():
        found = reasons(stack, name)
        for reason, limit in limits.items():
            assert found.count(reason) <= limit, (name, reason, found)
    assert reasons(stack, GOOD).count("Promoted") == 1 and reasons(stack, BAD).count("RolledBack") == 1

    # Serving ends as a normal run leaves it: each primary on the winner alone, no shadow, no
    # logger, the comparator forgets the shadow.
    good_predictor, bad_predictor = stack.predictor(GOOD), stack.predictor(BAD)
    assert good_predictor["model"]["storageUri"] == uris[(GOOD, v2)]
    assert bad_predictor["model"]["storageUri"] == uris[(BAD, b1)]
    for predictor in (good_predictor, bad_predictor):
        assert "canaryTrafficPercent" not in predictor and "logger" not in predictor, predictor
    assert stack.isvc(f"{GOOD}-shadow") is None and stack.isvc(f"{BAD}-shadow") is None
    assert httpx.get(f"{stack.comparator.url}/admin/shadows", headers=stack.comparator.admin_headers).json() == []


# -- RBAC -------------------------------------------------------------------------------------

# Granted by the ClusterRole, not called by an operator watching every namespace, and why.
UNUSED_CLUSTER_WIDE = {
    **{("kopf.dev", "kopfpeerings", verb): "namespaced peering (`-n NAMESPACE`): tests/e2e/test_operator.py"
       for verb in ("get", "list", "watch", "patch")},
    ("kopf.dev", "clusterkopfpeerings", "get"): PEERING_GET,
    ("apps", "deployments", "get"): "Standard mode only (a promotion's rollout): tests/e2e/test_operator.py",
    **{("gateway.networking.k8s.io", "httproutes", verb): "Standard mode only (the route's weights): tests/e2e/test_operator.py"
       for verb in ("get", "patch")},
    **WATCHED_GETS,
}  # fmt: skip


def test_the_operators_calls_are_what_its_cluster_role_grants(cluster: EmulatorServer) -> None:
    calls = cluster.calls(OPERATOR_USER)
    assert calls, "no operator calls recorded: run this module whole (its first test runs the operator)"
    report = rbac_check(calls, cluster_role_triples(), UNUSED_CLUSTER_WIDE)
    report.assert_least_privilege("UNUSED_CLUSTER_WIDE")
    # As installed it lists and watches across namespaces: only a ClusterRole can grant that.
    assert ("modelrollout.io", "modelrollouts", "watch") in report.cluster_scoped
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in report.cluster_scoped
    # Both of the operator's clients are the operator: kopf's own and the kubernetes client.
    assert {c.agent for c in calls} == {"kopf", "OpenAPI-Generator"}, {c.agent for c in calls}
