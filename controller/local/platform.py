"""The local platform: a rollout served by processes on this machine.

Per rollout there is one router process (`<rollout>-router`, the client endpoint, which splits
and mirrors traffic and exports the metrics the analysis reads; run under a parent that holds its
listening socket and restarts it at once after a crash, held_socket.py) and one KServe model server per
model version named in the routing (`<rollout>-v<version>`). In the shadow phase a second server
of the stable, `<rollout>-v<stable>-baseline`, receives every copy the shadow receives, at the same
moment, so the shadow's latency and errors are compared with a server measured the same way
(canary/traffic/mirror.py); the shadow enters the routing only once both are ready. All are children of the
`Supervisor`, so they keep serving while the controller restarts, and a restarted controller
re-adopts them.

`apply` runs every tick, so its steady state costs a few record reads and no HTTP: readiness is
probed only until a server has answered once, and the router is sent a routing only when it
differs from what that very router process last accepted (the payload holds the rollout's
comparison tolerance too, so a changed tolerance is sent once, like a changed weight). Ordering keeps clients away from
errors: a candidate enters the router's routing only once ready, and a version leaves the
router's routing before its server is stopped (make before break).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from canary.decision.tolerance import Comparison
from canary.traffic.atomic_file import atomic_write
from canary.traffic.router import RoutingDocument, Upstream
from controller.local.supervisor import ProcessRecord, Supervisor
from controller.platform import Routing, VersionHealth

log = logging.getLogger(__name__)

_ROLLOUT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")
# No '-' in versions: "<rollout>-v<version>" then never collides with another rollout's names.
_VERSION = re.compile(r"[A-Za-z0-9_.]{1,64}")

ROUTER = "router"
MODEL_SERVER = "modelserver"
# The stable's second server in the shadow phase, sent the same copies as the shadow (canary/traffic/mirror.py).
BASELINE_SERVER = "baseline"


@dataclass(frozen=True)
class _Sent:
    """A routing payload one router process accepted."""

    router_pid: int
    router_create_time: float
    payload: dict[str, Any]


class LocalPlatform:
    """`controller.platform.Platform` on local processes.

    `state_dir` holds the process records, logs and last routings; `tracking_uri` is given to
    model servers so `models:/` and `mlflow-artifacts:/` URIs resolve. With
    `prometheus_targets_dir`, each rollout's processes are listed in `<dir>/<rollout>.json`
    for Prometheus' file-based service discovery.
    """

    def __init__(
        self,
        state_dir: Path | str,
        tracking_uri: str,
        prometheus_targets_dir: Path | str | None = None,
        *,
        python: str = sys.executable,
        http_timeout: float = 1.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.tracking_uri = tracking_uri
        self.targets_dir = Path(prometheus_targets_dir) if prometheus_targets_dir is not None else None
        self.python = python
        self.supervisor = Supervisor(self.state_dir / "processes", stop_timeout=stop_timeout)
        self._routing_dir = self.state_dir / "routing"
        self._routing_dir.mkdir(parents=True, exist_ok=True)
        if self.targets_dir is not None:
            self.targets_dir.mkdir(parents=True, exist_ok=True)
        # Loopback only, and short: a router or model server that does not answer at once is
        # starting (or stuck) and is asked again next tick rather than blocking this one.
        self._http = httpx.Client(timeout=http_timeout, trust_env=False)
        self._lock = threading.RLock()
        self._sent: dict[str, _Sent] = {}
        # (pid, create_time) of model servers that have answered ready once.
        self._ready: set[tuple[int, float]] = set()
        self._targets_written: dict[str, str] = {}

    # ---- Platform -------------------------------------------------------------------------

    def apply(self, rollout: str, routing: Routing, artifact_uris: Mapping[str, str]) -> None:
        _check_rollout(rollout)
        for version in routing.versions:
            _check_version(version)
            if not artifact_uris.get(version):
                raise ValueError(f"no artifact URI for {routing.model} v{version} of rollout {rollout!r}")
        with self._lock:
            servers = {v: self._ensure_model_server(rollout, routing.model, v, artifact_uris[v]) for v in routing.versions}
            stable = routing.stable_version
            baseline = None
            if routing.candidate_role == "shadow" and routing.candidate_version is not None and stable is not None:
                baseline = self._ensure_model_server(rollout, routing.model, stable, artifact_uris[stable], baseline=True)
            # The socket is held by a small parent that restarts a crashed router at once: clients
            # wait for it in the backlog instead of being refused (controller/local/held_socket.py),
            # and the new router starts from the routing its predecessor kept.
            router = self.supervisor.ensure(
                f"{rollout}-{ROUTER}",
                lambda port: [
                    self.python, "-m", "controller.local.held_socket", "--port", str(port), "--",
                    self.python, "-m", "canary.traffic.router", "--rollout", rollout,
                    "--routing-file", str(self._routing_file(rollout)),
                ],  # fmt: skip
                env={"PYTHONUNBUFFERED": "1"},
                labels={"rollout": rollout, "component": ROUTER},
            )
            routed = self._route(rollout, routing, servers, router, baseline)
            for record in self.supervisor.records(rollout=rollout, component=MODEL_SERVER):
                version = record.labels.get("version", "")
                if version not in servers and version not in routed:
                    self._stop_server(record, rollout)
            for record in self.supervisor.records(rollout=rollout, component=BASELINE_SERVER):
                # Make before break: only once the router no longer sends it copies.
                if (baseline is None or record.name != baseline.name) and f"baseline:{record.port}" not in routed:
                    self._stop_server(record, rollout)
            self._write_targets(rollout)

    def health(self, rollout: str, version: str) -> VersionHealth:
        _check_rollout(rollout)
        _check_version(version)
        with self._lock:
            record = self.supervisor.get(_server_name(rollout, version))
            if record is None:
                return VersionHealth(ready=False)
            what = f"model server for {record.labels.get('model', rollout)} v{version}"
            if record.dead:
                return VersionHealth(ready=False, failure=f"{what} {record.failure}")
            if self._probe_ready(record):
                return VersionHealth(ready=True)
            if record.failure:  # restarted after a crash and not answering yet
                return VersionHealth(
                    ready=False, failure=f"{what} {record.failure}; restarted (attempt {record.restarts + 1})"
                )
            return VersionHealth(ready=False)

    def endpoint(self, rollout: str) -> str | None:
        _check_rollout(rollout)
        record = self.supervisor.get(f"{rollout}-{ROUTER}")
        return None if record is None else f"http://127.0.0.1:{record.port}"

    def endpoint_readiness(self, rollout: str) -> str:
        """"serving", or why clients calling the endpoint now get errors (the router's /readyz)."""
        endpoint = self.endpoint(rollout)
        if endpoint is None:
            return "no router"
        try:
            answer = self._http.get(endpoint + "/readyz")
        except httpx.HTTPError as exc:
            return f"router not answering ({type(exc).__name__})"
        if answer.status_code == 200:
            return "serving"
        try:
            return str(answer.json().get("error", answer.text))[:200]
        except ValueError:
            return f"router answered HTTP {answer.status_code}"

    def analysis_variables(self, rollout: str, version: str) -> Mapping[str, str]:
        # The router labels its series by version and role: no platform names are needed.
        return {}

    def teardown(self, rollout: str) -> None:
        _check_rollout(rollout)
        with self._lock:
            # Router first: clients get connection errors rather than answers from half a rollout.
            self.supervisor.stop(f"{rollout}-{ROUTER}")
            for record in self.supervisor.records(rollout=rollout):
                self.supervisor.stop(record.name)
            self._sent.pop(rollout, None)
            (self._routing_dir / f"{rollout}.json").unlink(missing_ok=True)
            self._routing_file(rollout).unlink(missing_ok=True)
            if self.targets_dir is not None:
                (self.targets_dir / f"{rollout}.json").unlink(missing_ok=True)
            self._targets_written.pop(rollout, None)

    def close(self) -> None:
        """Release the HTTP client. The processes keep running: that is the point of them."""
        self._http.close()

    # ---- model servers --------------------------------------------------------------------

    def _ensure_model_server(
        self, rollout: str, model: str, version: str, uri: str, *, baseline: bool = False
    ) -> ProcessRecord:
        def argv(port: int) -> list[str]:
            return [
                self.python, "-m", "controller.local.modelserver",
                "--name", model, "--model-uri", uri, "--port", str(port), "--version", version,
            ]  # fmt: skip

        name = _server_name(rollout, version) + ("-" + BASELINE_SERVER if baseline else "")
        return self.supervisor.ensure(
            name,
            argv,
            env={**_tracking_env(self.tracking_uri), "PYTHONUNBUFFERED": "1"},
            labels={
                "rollout": rollout,
                "component": BASELINE_SERVER if baseline else MODEL_SERVER,
                "model": model,
                "version": version,
            },
        )

    def _stop_server(self, record: ProcessRecord, rollout: str) -> None:
        log.info("stopping %s: no longer in the routing of %s", record.name, rollout)
        self.supervisor.stop(record.name)
        self._ready.discard((record.pid, record.create_time))

    def _probe_ready(self, record: ProcessRecord) -> bool:
        """Has this very process answered `GET /v2/health/ready` with 200 (now or before)?"""
        if record.dead:
            return False
        key = (record.pid, record.create_time)
        if key in self._ready:
            return True
        try:
            response = self._http.get(f"http://127.0.0.1:{record.port}/v2/health/ready")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        self._ready.add(key)
        return True

    # ---- router ---------------------------------------------------------------------------

    def _route(
        self,
        rollout: str,
        routing: Routing,
        servers: Mapping[str, ProcessRecord],
        router: ProcessRecord,
        baseline: ProcessRecord | None,
    ) -> set[str]:
        """Send the router what it can serve now; return the versions it routes to afterwards (and
        `baseline:<port>` while it sends copies to a baseline server)."""
        previous = self._sent.get(rollout) or self._load_sent(rollout)
        previous_versions = _payload_versions(previous.payload) if previous else set()
        payload = self._payload(rollout, routing, servers, previous, baseline)
        if payload is None:
            return previous_versions  # nothing servable yet: leave the router as it is
        if previous and previous.payload == payload and _same_process(previous, router) and rollout in self._sent:
            return _payload_versions(payload)
        if router.dead:
            return previous_versions
        url = f"http://127.0.0.1:{router.port}/admin/routing"
        try:
            response = self._http.put(url, json=payload)
        except httpx.HTTPError as exc:
            log.debug("router of %s not reachable yet (%s); routing is sent next tick", rollout, exc)
            return previous_versions | _payload_versions(payload)
        if response.status_code >= 400:
            raise RuntimeError(
                f"router of rollout {rollout!r} refused routing {payload}: HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        sent = _Sent(router.pid, router.create_time, payload)
        self._sent[rollout] = sent
        self._save_sent(rollout, sent)
        return _payload_versions(payload)

    def _payload(
        self,
        rollout: str,
        routing: Routing,
        servers: Mapping[str, ProcessRecord],
        previous: _Sent | None,
        baseline: ProcessRecord | None = None,
    ) -> dict[str, Any] | None:
        """The router's routing document (as JSON), holding back any version whose server is not ready."""
        stable = routing.stable_version
        if stable is not None and self._probe_ready(servers[stable]):
            stable_ref = {"version": stable, "url": f"http://127.0.0.1:{servers[stable].port}"}
        else:
            # Keep routing to the stable the router already has while the new one starts.
            kept = previous.payload.get("stable") if previous else None
            record = self.supervisor.get(_server_name(rollout, kept["version"])) if kept else None
            if record is None or not self._probe_ready(record):
                return None
            stable_ref = {"version": kept["version"], "url": f"http://127.0.0.1:{record.port}"}
        candidate = routing.candidate_version
        candidate_ref = None
        if candidate is not None and candidate != stable_ref["version"] and self._probe_ready(servers[candidate]):
            candidate_ref = {"version": candidate, "url": f"http://127.0.0.1:{servers[candidate].port}"}
        baseline_ref = None
        if routing.candidate_role == "shadow" and candidate_ref is not None:
            # A shadow is measured only beside its baseline: without a ready one, no copies yet.
            if baseline is None or stable_ref["version"] != stable or not self._probe_ready(baseline):
                candidate_ref = None
            else:
                baseline_ref = {"version": stable, "url": f"http://127.0.0.1:{baseline.port}"}
        shares: dict[str, Any] = {}
        if candidate_ref is not None:
            # Only the share that means something for the role: the router refuses the other.
            role = routing.candidate_role
            shares = {
                "candidate": Upstream(**candidate_ref),
                "candidate_role": role,
                "candidate_weight": routing.candidate_weight if role == "canary" else 0,
                "shadow_percent": routing.shadow_percent if role == "shadow" else 0,
                "baseline": Upstream(**baseline_ref) if baseline_ref is not None else None,
            }
        document = RoutingDocument(
            model=routing.model,
            stable=Upstream(**stable_ref),
            # Always sent: it also rules how the stable's predictions are scored on labels.
            comparison=Comparison.of(routing.tolerance),
            **shares,
        )
        return document.wire()

    def _routing_file(self, rollout: str) -> Path:
        """Where the router itself keeps the routing it accepted (read back when it restarts)."""
        return self._routing_dir / f"{rollout}.router.json"

    def _load_sent(self, rollout: str) -> _Sent | None:
        """What an earlier controller sent this rollout's router; used to keep its versions up."""
        try:
            data = json.loads((self._routing_dir / f"{rollout}.json").read_text())
            return _Sent(int(data["router_pid"]), float(data["router_create_time"]), dict(data["payload"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable last routing of %s: %s", rollout, exc)
            return None

    def _save_sent(self, rollout: str, sent: _Sent) -> None:
        atomic_write(
            self._routing_dir / f"{rollout}.json",
            json.dumps(
                {"router_pid": sent.router_pid, "router_create_time": sent.router_create_time, "payload": sent.payload}
            ),
        )

    # ---- Prometheus -----------------------------------------------------------------------

    def _write_targets(self, rollout: str) -> None:
        if self.targets_dir is None:
            return
        groups = []
        for record in self.supervisor.records(rollout=rollout):
            labels = {"rollout": rollout, "component": record.labels.get("component", "")}
            if "version" in record.labels:
                labels["version"] = record.labels["version"]
            groups.append({"targets": [f"127.0.0.1:{record.port}"], "labels": labels})
        text = json.dumps(groups, indent=2, sort_keys=True)
        path = self.targets_dir / f"{rollout}.json"
        if self._targets_written.get(rollout) == text:
            return
        try:
            unchanged = path.read_text() == text
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            atomic_write(path, text)  # Prometheus must never read half a file
        self._targets_written[rollout] = text


def _tracking_env(tracking_uri: str) -> dict[str, str]:
    """A model server's MLflow settings: a `user:password@` in the URI is handed over as
    MLFLOW_TRACKING_USERNAME/PASSWORD instead (the same Basic auth header), because MLflow quotes
    the URI whole in its errors ("API request to <uri> failed"): the server's log and its exit
    reason, which becomes the rollout's status, Events and MLflow tags, would show the password."""
    parts = urlsplit(tracking_uri)
    if not parts.username or not parts.password:
        return {"MLFLOW_TRACKING_URI": tracking_uri}
    return {
        "MLFLOW_TRACKING_URI": urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])),
        "MLFLOW_TRACKING_USERNAME": unquote(parts.username),
        "MLFLOW_TRACKING_PASSWORD": unquote(parts.password),
    }


def _server_name(rollout: str, version: str) -> str:
    return f"{rollout}-v{version}"


def _same_process(sent: _Sent, router: ProcessRecord) -> bool:
    return not router.dead and sent.router_pid == router.pid and sent.router_create_time == router.create_time


def _payload_versions(payload: Mapping[str, Any]) -> set[str]:
    """The versions a routing sends requests to, and `baseline:<port>` of its baseline server."""
    versions = {ref["version"] for ref in (payload.get("stable"), payload.get("candidate")) if ref}
    if payload.get("baseline"):
        versions.add("baseline:" + urlsplit(payload["baseline"]["url"]).netloc.rsplit(":", 1)[1])
    return versions


def _check_rollout(rollout: str) -> None:
    if not isinstance(rollout, str) or not _ROLLOUT.fullmatch(rollout):
        raise ValueError(
            f"invalid rollout name {rollout!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )


def _check_version(version: str) -> None:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(f"invalid model version {version!r}: use letters, digits, '.' and '_'")
