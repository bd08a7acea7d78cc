"""Promotion-to-shadow latency: MLflow alias moved -> the operator has the candidate in shadow.

    python -m benchmarks.promotion_latency            # 5 promotions per path
    python -m benchmarks.promotion_latency --quick    # 2 per path, a 3 s poll, a 1 s tick (smoke test)

What is timed: from the call `MlflowClient.set_registered_model_alias(model, "challenger", "2")`
(the clock starts before the call) until BOTH the rollout's `status.phase` is `Shadow` and the
InferenceService `<target>-shadow` exists with version 2's storageUri ("shadow s"), read by
polling the API every 20 ms. Also recorded: until the shadow comparator (the real one,
`canary.traffic.comparator`, in this process) lists the shadow, i.e. until the primary's mirrored requests
would be replayed to it ("comparator s"). The operator registers it at the first reconcile that
finds the shadow InferenceService Ready (with an address), so that column includes KServe's part
(here the double, every 0.2 s). And from the moment the shadow InferenceService first shows
`Ready` True for the candidate's storageUri to the comparator listing it: "ready -> mirroring s",
the operator's own delay, target <= 1 s (issue 15): the operator wakes the rollout when one of its
InferenceServices' status changes, instead of finding it Ready at its next tick (up to 5 s here).

One operator process (`python -m controller.cli operator --standalone --tick 5s --poll-interval
10s`, MODELROLLOUT_WEBHOOK_SECRET set; quick: 1 s tick, 3 s poll), two paths one after the other:
- poll: no MLflow webhook exists yet. The alias is set at chosen points of the poll cycle, so
  that a few samples stand for an alias moved at any time: promotion i of n just after a poll
  plus (i + 0.5) / n of the interval (a poll is seen as the operator's
  `modelrollout_registry_poll_seconds_count` moving, read every 10 ms). Expected: the rest of
  the interval plus the poll and a reconcile, so a median of about half an interval.
- webhook: an MLflow webhook (`MlflowClient.create_webhook`, event
  `model_version_alias.created`, the same secret) now points at the operator's
  `POST /webhooks/mlflow`, which wakes the poll. The 10 s poll goes on as well, as installed;
  it could be first only if it fell in the fraction of a second the webhook takes.
The MLflow server runs with the settings tests/fixtures/mlflow.py uses
(`MLFLOW_WEBHOOK_ALLOWED_SCHEMES`, `MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS`, a Fernet
`MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`, and a 1 s `MLFLOW_WEBHOOK_CACHE_TTL` so that a new webhook
is used within a second, not MLflow's 60); `--mlflow-uri` uses a running one that has them.

Each promotion has a registered model of its own (version 1 under `champion`, version 2
unaliased; s3:// sources, never opened) and a ModelRollout of its own (shadow enabled, 10 m)
with its own InferenceService; all are created while the operator starts, and the promotions
begin once every rollout shows stable version 1 and the KServe double has made its
InferenceService Ready. Promotions run one at a time; the earlier ones' rollouts stay in Shadow.
Around it: the Kubernetes API emulator of the test suite (`tests.fixtures.kube.start_kube_api`,
imported from tests/) with KServe's CRD, KServe's controller played by
`tests.kube.kserve_double.KServeDouble`, a real `mlflow server` and Prometheus; see
benchmarks/operator_scale.py, whose parts this reuses.

Reported per path: median and max of each column; the ratio webhook / poll (median and max of
"shadow s", median of "comparator s"), both measured in this run; the target with the largest
"ready -> mirroring s" of every promotion.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.operator_scale import (
    GROUP,
    ISVC,
    PLURAL,
    QUICK_TICK_S,
    REST_TIMEOUT_S,
    TICK_S,
    VERSION,
    KServeOnChange,
    OperatorProcess,
    Services,
    create_rollouts,
    register_models,
    rollout_body,
    services,
    source_uri,
)
from benchmarks.router_overhead import machine, ratio, table_rule
from benchmarks.targets import Target
from benchmarks.targets import render as render_targets

PATHS = ("poll", "webhook")
CANDIDATE_ALIAS = "challenger"
POLL_INTERVAL_S = 10.0
QUICK_POLL_INTERVAL_S = 3.0
FULL_REPEATS = 5
QUICK_REPEATS = 2
WEBHOOK_CACHE_TTL_S = 1.0
STEP_TIMEOUT_S = 60.0
SAMPLE_PERIOD_S = 0.02
TARGET_READY_TO_MIRRORING_S = 1.0


def webhook_server_env() -> dict[str, str]:
    """What `mlflow server` needs to deliver webhooks to a loopback receiver (docs/kserve-and-mlflow.md, "Webhooks")."""
    from cryptography.fernet import Fernet

    return {
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "MLFLOW_WEBHOOK_CACHE_TTL": f"{WEBHOOK_CACHE_TTL_S:g}",
    }


@contextmanager
def running_comparator() -> Iterator[str]:
    """The real shadow comparator (`canary.traffic.comparator`) on a free loopback port; yields its URL."""
    import uvicorn

    from canary.traffic.comparator import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="comparator", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the shadow comparator did not start within 15 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# --- one promotion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    path: str
    call_s: float  # set_registered_model_alias's own round trip
    phase_s: float  # alias call started -> status.phase Shadow
    isvc_s: float  # -> the -shadow InferenceService exists with the candidate's storageUri
    comparator_s: float  # -> the comparator lists the shadow
    ready_s: float  # -> the -shadow InferenceService is Ready with the candidate's storageUri

    @property
    def mirroring_after_ready_s(self) -> float:
        """The shadow InferenceService Ready -> the comparator lists it: the operator's delay."""
        return self.comparator_s - self.ready_s

    @property
    def shadow_s(self) -> float:
        """Phase Shadow and the shadow InferenceService in place: the benchmark's figure."""
        return max(self.phase_s, self.isvc_s)


class Cluster:
    """Reads of one namespace of the emulator and of the comparator, by plain HTTP."""

    def __init__(self, kube_url: str, namespace: str, comparator_url: str) -> None:
        self.kube_url, self.namespace, self.comparator_url = kube_url, namespace, comparator_url
        self.http = httpx.Client(base_url=kube_url, timeout=REST_TIMEOUT_S, trust_env=False)

    def _get(self, path: str) -> dict[str, Any] | None:
        response = self.http.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def rollout(self, name: str) -> dict[str, Any]:
        return self._get(f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{name}") or {}

    def isvc(self, name: str) -> dict[str, Any] | None:
        return self._get(f"/apis/{ISVC[0]}/{ISVC[1]}/namespaces/{self.namespace}/{ISVC[2]}/{name}")

    def comparator_knows(self, isvc: str, candidate: str) -> bool:
        shadows = self.http.get(f"{self.comparator_url}/admin/shadows").raise_for_status().json()
        return any(
            s.get("namespace") == self.namespace and s.get("inferenceService") == isvc and s.get("candidateVersion") == candidate
            for s in shadows
        )

    def close(self) -> None:
        self.http.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not alive():
            raise RuntimeError(f"the operator exited while waiting until {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Prepared:
    """One rollout made ready for a promotion: its model has version 1 under `champion` and 2 unaliased."""

    rollout: str
    isvc: str
    model: str


def prepare(cluster: Cluster, mlflow_url: str, names: Sequence[str]) -> list[Prepared]:
    """Register the models and create the rollouts of the promotions `names` (all at once)."""
    prepared = [Prepared(name, f"isvc-{name}", f"{cluster.namespace}-{name}") for name in names]
    register_models(mlflow_url, [p.model for p in prepared], versions=2)
    create_rollouts(cluster.kube_url, cluster.namespace, [rollout_body(p.rollout, p.model, p.isvc, shadow=True) for p in prepared])
    return prepared


def wait_prepared(cluster: Cluster, prepared: Sequence[Prepared], operator: OperatorProcess) -> None:
    """Until every rollout shows stable version 1 and its InferenceService is Ready."""

    def ready(p: Prepared) -> Callable[[], bool]:
        def check() -> bool:
            primary = cluster.isvc(p.isvc) or {}
            serving = ((primary.get("status") or {}).get("components") or {}).get("predictor", {}).get("latestReadyRevision")
            return (cluster.rollout(p.rollout).get("status") or {}).get("stableVersion") == "1" and bool(serving)

        return check

    for p in prepared:
        wait_until(ready(p), f"{p.rollout} shows stable version 1 and {p.isvc} is Ready", STEP_TIMEOUT_S, operator.alive)


def after_a_poll(operator: OperatorProcess, timeout: float = 60.0) -> float:
    """perf_counter just after the operator's next registry poll (its poll count moved)."""
    polls = "modelrollout_registry_poll_seconds_count"
    before = operator.samples()[polls]
    deadline = time.monotonic() + timeout
    while operator.samples()[polls] <= before:
        if time.monotonic() > deadline or not operator.alive():
            raise RuntimeError(f"the operator did not poll the registry within {timeout:g} s")
        time.sleep(0.01)
    return time.perf_counter()


def promote(
    path: str, p: Prepared, cluster: Cluster, operator: OperatorProcess, client: Any, at: float | None = None
) -> Sample:
    """Move `challenger` to version 2 (at perf_counter `at`, if given) and time the shadow's arrival."""
    if at is not None:
        time.sleep(max(0.0, at - time.perf_counter()))
    candidate_uri = source_uri(p.model, "2")
    seen: dict[str, float] = {}
    started = time.perf_counter()
    client.set_registered_model_alias(p.model, CANDIDATE_ALIAS, "2")
    call_s = time.perf_counter() - started
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while len(seen) < 4:
        now = time.perf_counter() - started
        if "phase" not in seen and (cluster.rollout(p.rollout).get("status") or {}).get("phase") == "Shadow":
            seen["phase"] = now
        if "isvc" not in seen or "ready" not in seen:
            shadow = cluster.isvc(f"{p.isvc}-shadow")
            if shadow is not None and shadow["spec"]["predictor"]["model"].get("storageUri") == candidate_uri:
                seen.setdefault("isvc", now)
                if is_ready(shadow):
                    seen.setdefault("ready", now)
        if "comparator" not in seen and cluster.comparator_knows(p.isvc, "2"):
            seen["comparator"] = now
        if time.monotonic() > deadline or not operator.alive():
            status = cluster.rollout(p.rollout).get("status") or {}
            raise RuntimeError(
                f"{path} path: after {STEP_TIMEOUT_S:g} s only {sorted(seen)} of phase/isvc/ready/comparator; "
                f"phase {status.get('phase')!r}, message {status.get('message')!r}\n{operator.log_tail()}"
            )
        time.sleep(SAMPLE_PERIOD_S)
    return Sample(path, call_s, seen["phase"], seen["isvc"], seen["comparator"], seen["ready"])


def is_ready(isvc: dict[str, Any]) -> bool:
    """KServe's `Ready` condition is True (the double writes it as KServe v0.20.0 does)."""
    conditions = (isvc.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# --- the run -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    repeats: int = FULL_REPEATS
    poll_interval_s: float = POLL_INTERVAL_S
    tick_s: float = TICK_S


def poll_phases(config: Config) -> list[float]:
    """Seconds after a poll at which the poll path's promotions move the alias: (i + 0.5) / n of it."""
    return [(i + 0.5) / config.repeats * config.poll_interval_s for i in range(config.repeats)]


def run(
    config: Config, workdir: Path, mlflow_url: str | None = None, prometheus_url: str | None = None
) -> tuple[list[Sample], float]:
    """Both paths, `config.repeats` promotions each; the samples and the set-up seconds.

    A given `mlflow_url` must run with the webhook settings of `webhook_server_env()` (the test
    suite's session server does)."""
    import mlflow

    secret = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        started = time.perf_counter()
        svc: Services = stack.enter_context(services(workdir, mlflow_url, prometheus_url, webhook_server_env()))
        comparator_url = stack.enter_context(running_comparator())
        namespace = svc.namespace("promote")
        kserve = KServeOnChange(svc.kube, namespace, period=0.2).start()
        stack.callback(kserve.stop)
        operator = OperatorProcess(
            workdir, svc.kube.kubeconfig, namespace, svc.mlflow_url, svc.prometheus_url,
            tick=f"{config.tick_s:g}s", poll_interval=f"{config.poll_interval_s:g}s",
            comparator_url=comparator_url, webhook_secret=secret,
        )  # fmt: skip
        stack.callback(operator.stop)
        cluster = Cluster(svc.kube.url, namespace, comparator_url)
        stack.callback(cluster.close)
        client = mlflow.MlflowClient(tracking_uri=svc.mlflow_url, registry_uri=svc.mlflow_url)
        prepared = {path: prepare(cluster, svc.mlflow_url, [f"{path}-{i}" for i in range(config.repeats)]) for path in PATHS}
        operator.wait_ready()
        for path in PATHS:
            wait_prepared(cluster, prepared[path], operator)
        setup_s = time.perf_counter() - started

        # Poll path: no webhook exists yet; promotion i at (i + 0.5) / n of a poll cycle.
        samples = [
            promote("poll", p, cluster, operator, client, at=after_a_poll(operator) + phase)
            for p, phase in zip(prepared["poll"], poll_phases(config))
        ]
        webhook = client.create_webhook(
            name=f"bench-{namespace}", url=f"{operator.url}/webhooks/mlflow",
            events=["model_version_alias.created"], secret=secret,
        )  # fmt: skip
        stack.callback(client.delete_webhook, webhook.webhook_id)
        time.sleep(WEBHOOK_CACHE_TTL_S + 0.5)  # past the server's webhook cache
        samples += [promote("webhook", p, cluster, operator, client) for p in prepared["webhook"]]
        if kserve.errors:
            raise RuntimeError(f"the KServe double failed: {kserve.errors[:3]}")
        return samples, setup_s


# --- the report ------------------------------------------------------------------------------------------


def render(config: Config, samples: list[Sample], setup_s: float, total_s: float) -> str:
    by_path = {path: [s for s in samples if s.path == path] for path in PATHS}
    lines = [
        "Promotion-to-shadow latency (python -m benchmarks.promotion_latency)",
        (
            f"operator: python -m controller.cli operator --standalone --tick {config.tick_s:g}s, as a process; "
            f"--poll-interval {config.poll_interval_s:g}s; poll path: no MLflow webhook, promotion i of n set (i + 0.5) / n "
            "of a poll interval after a poll; webhook path: then an MLflow webhook (model_version_alias.created) to the operator"
        ),
        (
            "API server: the kmock emulator (tests/kube); KServe: the test double (every 0.2 s); real mlflow server, "
            "Prometheus and shadow comparator; each promotion its own model and rollout"
        ),
        (
            "timed from the set_registered_model_alias call: shadow = status.phase Shadow and the -shadow "
            f"InferenceService with the candidate (the figure); comparator = the comparator lists it; sampled every {SAMPLE_PERIOD_S * 1000:g} ms"
        ),
        "",
    ]
    head = (
        f"| {'path':<7} | {'promotions':>10} | {'shadow p50 s':>12} | {'shadow max s':>12} | {'phase p50 s':>11} | "
        f"{'isvc p50 s':>10} | {'comparator p50 s':>16} | {'comparator max s':>16} | {'alias call ms':>13} |"
    )
    lines += [head, table_rule(head)]
    for path, got in by_path.items():
        lines.append(
            f"| {path:<7} | {len(got):>10} | {statistics.median(s.shadow_s for s in got):12.2f} | "
            f"{max(s.shadow_s for s in got):12.2f} | {statistics.median(s.phase_s for s in got):11.2f} | "
            f"{statistics.median(s.isvc_s for s in got):10.2f} | {statistics.median(s.comparator_s for s in got):16.2f} | "
            f"{max(s.comparator_s for s in got):16.2f} | {statistics.median(s.call_s for s in got) * 1000:13.1f} |"
        )
    poll, hook = by_path["poll"], by_path["webhook"]
    ratio_head = f"| {'ratio':<14} | {'shadow p50':>10} | {'shadow max':>10} | {'comparator p50':>14} |"
    lines += [
        "",
        "ratio webhook / poll (same run):",
        ratio_head,
        table_rule(ratio_head),
        (
            f"| {'webhook/poll':<14} | {ratio(statistics.median(s.shadow_s for s in hook), statistics.median(s.shadow_s for s in poll)):10.3f} | "
            f"{ratio(max(s.shadow_s for s in hook), max(s.shadow_s for s in poll)):10.3f} | "
            f"{ratio(statistics.median(s.comparator_s for s in hook), statistics.median(s.comparator_s for s in poll)):14.3f} |"
        ),
        "",
        (
            "every promotion, shadow s: poll: "
            + ", ".join(f"{s.shadow_s:.2f} (set {phase:g} s after a poll)" for s, phase in zip(poll, poll_phases(config)))
            + "; webhook: "
            + ", ".join(f"{s.shadow_s:.2f}" for s in hook)
        ),
        "",
        "the shadow InferenceService Ready (candidate's storageUri) -> the comparator lists it (the operator's delay):",
    ]
    ready_head = f"| {'promotions':<10} | {'ready -> mirroring p50 s':>24} | {'max s':>6} | {'every promotion, s':<40} |"
    delays = [s.mirroring_after_ready_s for s in samples]
    lines += [
        ready_head,
        table_rule(ready_head),
        f"| {'all':<10} | {statistics.median(delays):24.2f} | {max(delays):6.2f} | {', '.join(f'{d:.2f}' for d in delays):<40} |",
        "",
        render_targets([
            Target(
                "shadow InferenceService Ready -> mirroring live", "<=", TARGET_READY_TO_MIRRORING_S, max(delays), unit=" s",
                note=f"the worst of {len(delays)} promotions, p50 {statistics.median(delays):.2f} s, sampled every "
                f"{SAMPLE_PERIOD_S * 1000:g} ms",
            )
        ]),
        "",
        f"setup: services, comparator, operator and the {2 * config.repeats} rollouts ready in {setup_s:.1f} s",
        f"machine: {machine()}; took {total_s:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.promotion_latency", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{QUICK_REPEATS} promotions per path, a {QUICK_POLL_INTERVAL_S:g} s poll and a {QUICK_TICK_S:g} s tick",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, help=f"promotions per path (default {FULL_REPEATS}; quick {QUICK_REPEATS})")
    parser.add_argument("--mlflow-uri", help="use this running MLflow server (with webhook settings) instead of starting one")
    parser.add_argument("--prometheus-url", help="use this running Prometheus instead of starting one")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if args.quick else FULL_REPEATS)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    config = Config(
        repeats=repeats,
        poll_interval_s=QUICK_POLL_INTERVAL_S if args.quick else POLL_INTERVAL_S,
        tick_s=QUICK_TICK_S if args.quick else TICK_S,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-promotion-") as workdir:
        samples, setup_s = run(config, Path(workdir), args.mlflow_uri, args.prometheus_url)
    print(render(config, samples, setup_s, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
