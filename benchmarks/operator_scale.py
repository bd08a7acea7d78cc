"""Operator-scale benchmark: `modelrollout operator` driving many ModelRollouts in one namespace.

    python -m benchmarks.operator_scale            # 1000 rollouts, against 10 in the same run (~4 min)
    python -m benchmarks.operator_scale --rollouts 200   # a smaller measured size
    python -m benchmarks.operator_scale --quick    # 20 against 10, 1 s tick, 2 s window (smoke test)

The parts: the operator as a process (`python -m controller.cli operator --standalone -n NS
--tick 5s --poll-interval 15s`), a real `mlflow server` (sqlite, one worker) and a real Prometheus
(`controller.local`), all on 127.0.0.1 (`--mlflow-uri` / `--prometheus-url` use running ones).
No Kubernetes API can run here: the API server is the kmock-based emulator of the test suite
(`tests.fixtures.kube.start_kube_api`, imported from tests/), serving our CRD and KServe's real
InferenceService CRD, with its request log kept short (`trim_request_log`: kmock's grows and
slows every request down). KServe's controller is the test suite's
`tests.kube.kserve_double.KServeDouble`. The emulator, the double and the watch below run in
this process and share the machine with the operator ("harness CPU" says how much they took).

For each size N (the baseline N=10 first, then N=1000; quick 20), in a namespace of its own: N
models registered through MLflow's REST API, each with one version (an s3:// source, never
opened) under the alias `champion`; N ModelRollouts, each naming its own model and its own
InferenceService (Knative mode), all created BEFORE the operator starts; then a fresh operator
process. The tick is 5 s (quick 1 s): long against a reconcile (tens of ms), so after the first
round every reconcile is driven by the tick (no alias moves, no commands, nothing wakes a rollout).

Measured per size:
(a) first round: a watch on the ModelRollouts records when each one's status first shows its
    stable version. Reported: the operator's start-up (spawned -> `/readyz` 200), spawned ->
    first and -> last rollout stable, and the round proper, first -> last stable; per-rollout
    cost = round / (N - 1). The stable version needs no ready InferenceService, so the double
    is started only after the round: the round is the operator's and the emulator's work alone
    (reads, kopf's finalizer patches, status writes, InferenceService creations).
(b) steady state: once the double has made every InferenceService Ready (then it is stopped:
    nothing changes any more) and one more tick has passed, the operator's own histogram
    `modelrollout_reconcile_seconds` (its `/metrics`) is read at the start and the end of a
    fixed window (60 s; quick two ticks): reconciles per second (delta count / window) against
    the N / tick asked for, and mean wall seconds per reconcile (delta sum / delta count). With
    them: the operator's CPU per reconcile (/proc/<pid>/stat over the window / reconciles), the
    harness's CPU share, and the writes the emulator took (its resourceVersion; an idle rollout's
    reconcile writes nothing: a status patch that changes nothing is no write).
(c) memory: the operator's VmRSS (/proc/<pid>/status) at the start and the end of the window:
    flat = no growth with reconciles.
(d) API requests: the operator reaches the emulator with a bearer token of its own (as its
    ServiceAccount would), and the emulator counts the requests of each kind it serves
    (`EmulatorServer.call_counts`). Over the window: the requests that are not watches (a watch is
    opened once and streams; kopf reopens each every `server_timeout`, 300 s, per kind, not per
    rollout) divided by the rollouts and the ticks in the window: API requests per idle rollout
    per tick, target 0 (the rollouts and InferenceServices are read from kopf's watches, and
    nothing unchanged is written).

Targets (issue 15), printed with their measured value: 0 API requests per idle rollout per tick;
RSS under 500 MiB with 1000 rollouts (the default size, as `make bench` runs it).

Ratios (same run): N=1000 against N=10 for the per-rollout round cost, the mean reconcile time,
the CPU per reconcile and the RSS (plus KiB per extra rollout); within a size, RSS end / start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.router_overhead import machine, ratio, table_rule
from benchmarks.targets import Target
from benchmarks.targets import render as render_targets
from controller.local.mlflow_server import MlflowServer
from controller.local.ports import free_port
from controller.local.prometheus_server import PrometheusServer

GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelrollouts"
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
STABLE_ALIAS = "champion"
BASELINE_N = 10
FULL_N = 1000
TARGET_N = 1000  # the size the RSS target is stated for
TARGET_RSS_MIB = 500.0
TARGET_IDLE_REQUESTS = 0.0  # API requests per idle rollout per tick
# The operator's identity on the emulator (its requests are counted apart from the harness's).
OPERATOR_USER = "system:serviceaccount:modelrollout-system:modelrollout"
QUICK_N = 20
TICK_S = 5.0
QUICK_TICK_S = 1.0
BUCKET = "s3://modelrollout-bench/artifacts"  # --artifacts-destination; the s3:// sources are kept as they are
SERVER_START_TIMEOUT_S = 120.0
OPERATOR_READY_TIMEOUT_S = 60.0
REST_TIMEOUT_S = 30.0


# --- the services around the operator ------------------------------------------------------------


def trim_request_log(kube: Any, period_s: float = 0.05) -> Callable[[], None]:
    """Keep the emulator's request log short, from a task on its own loop; returns the stopper.

    kmock keeps every request it served and, to route a new one, walks that whole log through
    its filters, so each request costs more than the one before (measured while this was built:
    a GET of one ModelRollout took ~3 ms after 50 requests, ~100 ms after 1,000 to 3,000). A
    benchmark sending thousands would measure that growth instead of the operator. The emulator
    routes with no count- or slice-based reactions, so dropping the log (kmock's private
    `_requests` lists) every `period_s` changes no answer.
    """
    emulator = kube.emulator

    async def trim_forever() -> None:
        while True:
            emulator._requests.clear()
            for payload in emulator._payloads:
                payload._requests.clear()
            await asyncio.sleep(period_s)

    async def start() -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(trim_forever())

    task = kube.call(start)

    async def cancel() -> None:
        task.cancel()

    return lambda: kube.call(cancel)


@dataclass
class Services:
    """The emulated API server (both CRDs loaded), MLflow and Prometheus."""

    kube: Any  # tests.kube.server.EmulatorServer
    mlflow_url: str
    prometheus_url: str
    start_s: float

    def namespace(self, prefix: str) -> str:
        """A new namespace, named `prefix` and a random suffix."""
        name = f"{prefix}-{secrets.token_hex(3)}"
        with httpx.Client(base_url=self.kube.url, timeout=REST_TIMEOUT_S) as http:
            created = http.post("/api/v1/namespaces", json={"metadata": {"name": name}})
        if created.status_code != 201:
            raise RuntimeError(f"could not create namespace {name}: HTTP {created.status_code} {created.text[:200]}")
        return name


@contextmanager
def services(
    workdir: Path,
    mlflow_url: str | None = None,
    prometheus_url: str | None = None,
    mlflow_env: dict[str, str] | None = None,
) -> Iterator[Services]:
    """The emulator, and an `mlflow server` and a Prometheus unless running ones are given; all
    started here are stopped on exit. MLflow, the slow one, starts in a thread while the CRDs load."""
    # The test suite's emulator and our CRD's manifest (see the module docstring).
    from tests.fixtures.kube import MODELROLLOUT_CRD, start_kube_api

    started = time.perf_counter()
    with ExitStack() as stack:
        starter: threading.Thread | None = None
        failure: list[BaseException] = []
        if mlflow_url is None:
            mlflow = MlflowServer(data_dir=workdir / "mlflow", port=free_port(), extra_env=mlflow_env or {})
            mlflow_url = mlflow.url

            def start_mlflow() -> None:
                try:
                    mlflow.start(timeout=SERVER_START_TIMEOUT_S)
                except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
                    failure.append(err)

            starter = threading.Thread(target=start_mlflow, name="mlflow-start", daemon=True)
            starter.start()

            def stop_mlflow(thread: threading.Thread = starter) -> None:
                thread.join(SERVER_START_TIMEOUT_S)  # a start still under way finishes before the stop
                mlflow.stop()

            stack.callback(stop_mlflow)
        (workdir / "kube").mkdir()
        kube = start_kube_api(workdir / "kube")
        stack.callback(kube.stop)
        stack.callback(trim_request_log(kube))
        kube.load_kserve_crd()
        kube.load_crds([MODELROLLOUT_CRD])
        if prometheus_url is None:
            prometheus = PrometheusServer(data_dir=workdir / "prometheus", port=free_port())
            prometheus.start()
            stack.callback(prometheus.stop)
            prometheus_url = prometheus.url
        if starter is not None:
            starter.join(SERVER_START_TIMEOUT_S)
            if failure:
                raise failure[0]
            if starter.is_alive():
                raise RuntimeError(f"mlflow server did not start within {SERVER_START_TIMEOUT_S:g} s")
        yield Services(kube, mlflow_url, prometheus_url, time.perf_counter() - started)


def register_models(mlflow_url: str, names: Sequence[str], versions: int = 1, workers: int = 4) -> None:
    """Each model created with `versions` versions (s3:// sources MLflow never opens), `champion` on 1."""
    api = mlflow_url + "/api/2.0/mlflow"
    with httpx.Client(timeout=REST_TIMEOUT_S, trust_env=False) as http:

        def call(path: str, body: dict[str, str]) -> dict[str, Any]:
            response = http.post(api + path, json=body)
            if response.status_code != 200:
                raise RuntimeError(f"MLflow refused POST {path}: HTTP {response.status_code}: {response.text[:300]}")
            return response.json()

        def one(name: str) -> None:
            call("/registered-models/create", {"name": name})
            for number in range(1, versions + 1):
                call("/model-versions/create", {"name": name, "source": source_uri(name, str(number))})
            call("/registered-models/alias", {"name": name, "alias": STABLE_ALIAS, "version": "1"})

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, names))  # re-raises the first failure


def source_uri(model: str, version: str) -> str:
    """The source registered for a version; the operator puts it in storageUri unchanged."""
    return f"s3://modelrollout-bench/{model}/{version}"


def rollout_body(name: str, model: str, isvc: str, shadow: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model},
            "target": {"inferenceService": isvc, "deploymentMode": "Knative"},
            "shadow": {"enabled": shadow, "duration": "10m", "percent": 100},
            "canary": {"steps": [20, 60], "interval": "1m"},
            "progressDeadline": "20m",
            "analysis": {
                "provider": "knative",
                "metrics": [
                    {"name": "p95", "template": "latency_p95", "max": 0.2},
                    {"name": "errors", "template": "error_rate", "max": 0.05},
                ],
            },
        },
    }


def create_rollouts(kube_url: str, namespace: str, bodies: Sequence[dict[str, Any]], workers: int = 4) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    with httpx.Client(base_url=kube_url, timeout=REST_TIMEOUT_S) as http:

        def one(body: dict[str, Any]) -> None:
            created = http.post(path, json=body)
            if created.status_code != 201:
                raise RuntimeError(f"could not create {body['metadata']['name']}: HTTP {created.status_code} {created.text[:300]}")

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, bodies))


class KServeOnChange:
    """KServe's controller, played by the test suite's double: reconciles of the namespace whenever
    an InferenceService appeared or its generation changed (one list every `period` seconds).

    The double rewrites every InferenceService's status on each call; calling it on change only
    keeps its cost off the harness while nothing changes. As KServe does, the double needs more
    than one reconcile to report a change: the first only initialises the conditions and a new
    revision starts before it is ready, so each change is followed by `SETTLE_ROUNDS` reconciles."""

    SETTLE_ROUNDS = 3

    def __init__(self, kube: Any, namespace: str, period: float = 0.5) -> None:
        from tests.kube.kserve_double import KServeDouble

        self._api_client = kube.api_client()
        self._double = KServeDouble(self._api_client)
        self._http = httpx.Client(base_url=kube.url, timeout=REST_TIMEOUT_S)
        self._path = f"/apis/{ISVC[0]}/{ISVC[1]}/namespaces/{namespace}/{ISVC[2]}"
        self.namespace, self.period = namespace, period
        self.errors: list[str] = []
        self._seen: dict[str, int] = {}
        self._rounds_left = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kserve-double", daemon=True)

    def start(self) -> KServeOnChange:
        self._thread.start()
        return self

    def _items(self) -> list[dict[str, Any]]:
        listing = self._http.get(self._path)
        listing.raise_for_status()
        return listing.json()["items"]

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                generations = {i["metadata"]["uid"]: i["metadata"].get("generation", 0) for i in self._items()}
                if generations != self._seen:
                    self._seen, self._rounds_left = generations, self.SETTLE_ROUNDS
                if self._rounds_left:
                    self._double.reconcile(self.namespace, ready=True)
                    self._rounds_left -= 1
            except ApiException as err:
                if err.status not in (404, 409):  # a write between our read and ours: next round
                    self.errors.append(f"HTTP {err.status}: {err.reason}")
            except Exception as err:  # noqa: BLE001 - reported with the results
                self.errors.append(f"{type(err).__name__}: {err}")
            self._stop.wait(self.period)

    def wait_ready(self, count: int, timeout: float) -> bool:
        """True once `count` InferenceServices serve a ready revision; False at `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.errors:
            ready = [i for i in self._items() if ((i.get("status") or {}).get("components") or {}).get("predictor", {}).get("latestReadyRevision")]
            if len(ready) >= count:
                return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._http.close()
        self._api_client.close()


class RolloutWatch:
    """When each ModelRollout's status first showed the stable version, seen through a watch (no polling)."""

    def __init__(self, kube_url: str, namespace: str, stable_version: str = "1") -> None:
        self._http = httpx.Client(base_url=kube_url, timeout=httpx.Timeout(REST_TIMEOUT_S, read=10.0))
        self._path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        self.stable_version = stable_version
        self.stable_at: dict[str, float] = {}  # perf_counter when status.stableVersion first showed
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="rollout-watch", daemon=True)

    def start(self) -> RolloutWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        since = ""
        while not self._stop.is_set():
            try:
                params = {"watch": "true", "timeoutSeconds": "1", "resourceVersion": since}
                with self._http.stream("GET", self._path, params=params) as response:
                    response.raise_for_status()
                    for line in response.iter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # 410: resumed too far back; start from a fresh list
                            since = ""
                            break
                        since = event["object"]["metadata"].get("resourceVersion", since)
                        self._observe(event["object"])
            except (httpx.HTTPError, ValueError) as err:
                if not self._stop.is_set():
                    self.errors.append(f"{type(err).__name__}: {err}")
                    self._stop.wait(0.2)

    def _observe(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in self.stable_at and (obj.get("status") or {}).get("stableVersion") == self.stable_version:
            with self._changed:
                self.stable_at[name] = time.perf_counter()
                self._changed.notify_all()

    def wait_all(self, count: int, timeout: float, alive: Any = None) -> bool:
        """True once `count` rollouts have shown their stable version; False at `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.stable_at) < count:
                left = deadline - time.monotonic()
                if left <= 0 or (alive is not None and not alive()):
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self._http.close()


# --- the operator as a process --------------------------------------------------------------------


class OperatorProcess:
    """`python -m controller.cli operator` in a subprocess, its output in a log file."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        namespace: str,
        mlflow_url: str,
        prometheus_url: str,
        tick: str,
        poll_interval: str,
        comparator_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"operator-{namespace}.log"
        command = [
            sys.executable, "-m", "controller.cli", "operator", "-n", namespace, "--standalone",
            "--mlflow-uri", mlflow_url, "--prometheus-url", prometheus_url, "--port", str(self.port),
            "--tick", tick, "--poll-interval", poll_interval, "--artifacts-destination", BUCKET,
        ]  # fmt: skip
        if comparator_url:
            command += ["--comparator-url", comparator_url]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "COLUMNS": "200"}
        env.pop("MODELROLLOUT_WEBHOOK_SECRET", None)
        if webhook_secret:
            env["MODELROLLOUT_WEBHOOK_SECRET"] = webhook_secret
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.spawned = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._http = httpx.Client(base_url=self.url, timeout=5.0, trust_env=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = OPERATOR_READY_TIMEOUT_S) -> float:
        """Seconds from spawn to `/readyz` answering 200; RuntimeError with the log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the operator exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if self._http.get("/readyz", timeout=1.0).status_code == 200:
                    return time.perf_counter() - self.spawned
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the operator was not ready within {timeout:g} s:\n{self.log_tail()}")

    def samples(self) -> dict[str, float]:
        """The unlabelled samples of the operator's /metrics by name (a histogram's `_sum`, `_count`)."""
        text = self._http.get("/metrics").raise_for_status().text
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}

    def reconcile_totals(self) -> tuple[float, float]:
        """(sum of seconds, count) of `modelrollout_reconcile_seconds`, from the operator's /metrics."""
        values = self.samples()
        if "modelrollout_reconcile_seconds_count" not in values:
            raise RuntimeError("the operator's /metrics has no modelrollout_reconcile_seconds histogram")
        return values["modelrollout_reconcile_seconds_sum"], values["modelrollout_reconcile_seconds_count"]

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    def cpu_s(self) -> float:
        """User + system CPU seconds the operator process has used (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._http.close()
        self._log.close()


# --- one size ---------------------------------------------------------------------------------------


def api_revision(kube_url: str) -> int:
    """The emulator's global resourceVersion: it grows by one per write (no-op writes excluded)."""
    listing = httpx.get(f"{kube_url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}", timeout=REST_TIMEOUT_S)
    listing.raise_for_status()
    return int(listing.json()["metadata"]["resourceVersion"])


@dataclass(frozen=True)
class SizeResult:
    rollouts: int
    setup_s: float  # registering the models and creating the rollouts
    ready_s: float  # operator spawned -> /readyz 200
    first_stable_s: float  # spawned -> the first rollout's status shows its stable version
    all_stable_s: float  # spawned -> the last one's does
    round_cpu: float  # the operator's CPU seconds per second, first -> last stable
    round_harness_cpu: float  # this process's CPU seconds per second, spawn -> last stable
    reconciles_per_s: float  # steady state, over the window
    reconcile_mean_s: float  # delta sum / delta count of modelrollout_reconcile_seconds
    cpu_per_reconcile_s: float  # the operator's CPU (user + system) over the window / reconciles
    cpu_share: float  # the operator's CPU seconds per second of the window
    harness_cpu: float  # this process's (emulator, double) CPU seconds per second of the window
    api_writes: int  # writes the emulator took during the window
    api_requests: dict[str, int]  # the operator's requests over the window by "verb resource", watches left out
    window_s: float
    rss_start_kib: int
    rss_end_kib: int

    @property
    def round_s(self) -> float:
        return self.all_stable_s - self.first_stable_s

    @property
    def per_rollout_round_s(self) -> float:
        return self.round_s / max(self.rollouts - 1, 1)

    tick_s: float

    @property
    def asked_per_s(self) -> float:
        return self.rollouts / self.tick_s

    @property
    def ticks(self) -> float:
        """Rollout ticks in the window: rollouts x window / tick."""
        return self.rollouts * self.window_s / self.tick_s

    @property
    def requests_per_rollout_tick(self) -> float:
        return sum(self.api_requests.values()) / self.ticks


def requests_between(before: Mapping[Any, int], after: Mapping[Any, int]) -> dict[str, int]:
    """The requests served between two `call_counts`, by "verb resource", watches left out."""
    grown: dict[str, int] = {}
    for call, count in after.items():
        if call.verb != "watch" and count > before.get(call, 0):
            kind = f"{call.verb} {call.resource}"
            grown[kind] = grown.get(kind, 0) + count - before.get(call, 0)
    return grown


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (BASELINE_N, FULL_N)
    tick_s: float = TICK_S
    window_s: float = 60.0
    round_timeout_s: float = 300.0


def measure_size(svc: Services, workdir: Path, n: int, config: Config) -> SizeResult:
    """One size in a namespace of its own, with an operator of its own (see the module docstring)."""
    namespace = svc.namespace(f"scale-{n}")
    names = [f"{namespace}-m{i:04d}" for i in range(n)]
    began = time.perf_counter()
    register_models(svc.mlflow_url, names)
    create_rollouts(
        svc.kube.url, namespace, [rollout_body(f"r{i:04d}", model, f"isvc-{i:04d}") for i, model in enumerate(names)]
    )
    setup_s = time.perf_counter() - began
    with ExitStack() as stack:
        watch = RolloutWatch(svc.kube.url, namespace).start()
        stack.callback(watch.stop)
        harness0 = time.process_time()
        kubeconfig = svc.kube.kubeconfig_for(OPERATOR_USER, workdir / f"kubeconfig-{namespace}")
        operator = OperatorProcess(
            workdir, kubeconfig, namespace, svc.mlflow_url, svc.prometheus_url,
            tick=f"{config.tick_s:g}s", poll_interval="15s",
        )  # fmt: skip
        stack.callback(operator.stop)
        ready_s = operator.wait_ready()
        watch.wait_all(1, config.round_timeout_s, operator.alive)
        round_cpu0, round_clock0 = operator.cpu_s(), time.perf_counter()
        if not watch.wait_all(n, config.round_timeout_s, operator.alive):
            raise RuntimeError(
                f"{len(watch.stable_at)} of {n} rollouts showed their stable version within "
                f"{config.round_timeout_s:g} s (watch errors: {watch.errors[:3]}):\n{operator.log_tail()}"
            )
        round_cpu = (operator.cpu_s() - round_cpu0) / max(time.perf_counter() - round_clock0, 1e-9)
        times = sorted(watch.stable_at.values())
        round_harness_cpu = (time.process_time() - harness0) / (times[-1] - operator.spawned)
        watch.stop()
        if watch.errors:
            raise RuntimeError(f"the watch on the rollouts failed: {watch.errors[:3]}")

        # The stable version needs no ready InferenceService; the steady state is measured with
        # every one Ready, and with the double stopped (nothing changes any more).
        kserve = KServeOnChange(svc.kube, namespace).start()
        stack.callback(kserve.stop)
        if not kserve.wait_ready(n, config.round_timeout_s):
            raise RuntimeError(f"the InferenceServices did not all turn Ready: {kserve.errors[:3]}\n{operator.log_tail()}")
        kserve.stop()
        if kserve.errors:
            raise RuntimeError(f"the KServe double failed: {kserve.errors[:3]}")
        time.sleep(config.tick_s)  # one tick: every rollout has reconciled against a Ready InferenceService

        sum0, count0 = operator.reconcile_totals()
        requests0 = svc.kube.call_counts(OPERATOR_USER)
        cpu0, harness1, writes0 = operator.cpu_s(), time.process_time(), api_revision(svc.kube.url)
        rss_start = operator.rss_kib()
        window_began = time.perf_counter()
        time.sleep(config.window_s)
        sum1, count1 = operator.reconcile_totals()
        cpu1, harness2, writes1 = operator.cpu_s(), time.process_time(), api_revision(svc.kube.url)
        requests1 = svc.kube.call_counts(OPERATOR_USER)
        window_s = time.perf_counter() - window_began
        rss_end = operator.rss_kib()
        if not operator.alive():
            raise RuntimeError(f"the operator exited during the window:\n{operator.log_tail()}")
    reconciles = count1 - count0
    return SizeResult(
        rollouts=n,
        setup_s=setup_s,
        ready_s=ready_s,
        first_stable_s=times[0] - operator.spawned,
        all_stable_s=times[-1] - operator.spawned,
        round_cpu=round_cpu,
        round_harness_cpu=round_harness_cpu,
        reconciles_per_s=reconciles / window_s,
        reconcile_mean_s=(sum1 - sum0) / reconciles if reconciles > 0 else math.nan,
        cpu_per_reconcile_s=(cpu1 - cpu0) / reconciles if reconciles > 0 else math.nan,
        cpu_share=(cpu1 - cpu0) / window_s,
        harness_cpu=(harness2 - harness1) / window_s,
        api_writes=writes1 - writes0,
        api_requests=requests_between(requests0, requests1),
        window_s=window_s,
        rss_start_kib=rss_start,
        rss_end_kib=rss_end,
        tick_s=config.tick_s,
    )


def run(
    config: Config, workdir: Path, mlflow_url: str | None = None, prometheus_url: str | None = None
) -> tuple[list[SizeResult], float]:
    with services(workdir, mlflow_url, prometheus_url) as svc:
        return [measure_size(svc, workdir, n, config) for n in config.sizes], svc.start_s


# --- the report --------------------------------------------------------------------------------------


def _table(head: str, rows: list[str]) -> list[str]:
    return [head, table_rule(head), *rows]


def render(config: Config, results: list[SizeResult], start_s: float, total_s: float) -> str:
    base = results[0]
    lines = [
        "Operator-scale benchmark (python -m benchmarks.operator_scale)",
        (
            f"operator: python -m controller.cli operator --standalone --tick {config.tick_s:g}s --poll-interval 15s, as a process; "
            "API server: the kmock emulator (tests/kube); KServe: the test double; real mlflow server and Prometheus"
        ),
        (
            "each rollout: its own registered model (1 version, alias 'champion') and its own InferenceService "
            "(Knative); all created before the operator starts"
        ),
        "",
        "first round (spawn = operator process started):",
    ]
    lines += _table(
        f"| {'rollouts':>8} | {'ready s':>7} | {'first stable s':>14} | {'all stable s':>12} | {'round s':>7} | "
        f"{'ms/rollout':>10} | {'operator CPU':>12} | {'harness CPU':>11} |",
        [
            f"| {r.rollouts:>8} | {r.ready_s:7.2f} | {r.first_stable_s:14.2f} | {r.all_stable_s:12.2f} | "
            f"{r.round_s:7.2f} | {r.per_rollout_round_s * 1000:10.1f} | {r.round_cpu:12.1%} | {r.round_harness_cpu:11.1%} |"
            for r in results
        ],
    )
    lines += ["", f"steady state, every InferenceService Ready, over {config.window_s:g} s one tick after the round:"]
    lines += _table(
        f"| {'rollouts':>8} | {'reconciles/s':>12} | {'asked/s':>7} | {'reconcile ms':>12} | {'CPU ms/reconcile':>16} | "
        f"{'operator CPU':>12} | {'harness CPU':>11} | {'API writes':>10} | {'RSS MiB':>7} | {'RSS end MiB':>11} | {'end/start':>9} |",
        [
            f"| {r.rollouts:>8} | {r.reconciles_per_s:12.2f} | {r.asked_per_s:7.1f} | {r.reconcile_mean_s * 1000:12.1f} | "
            f"{r.cpu_per_reconcile_s * 1000:16.2f} | {r.cpu_share:12.1%} | {r.harness_cpu:11.1%} | {r.api_writes:10d} | "
            f"{r.rss_start_kib / 1024:7.1f} | {r.rss_end_kib / 1024:11.1f} | {ratio(r.rss_end_kib, r.rss_start_kib):9.3f} |"
            for r in results
        ],
    )
    lines += ["", "the operator's API requests over the same window (watches left out: each is opened once per kind):"]
    lines += _table(
        f"| {'rollouts':>8} | {'requests':>8} | {'rollout ticks':>13} | {'per rollout per tick':>20} | {'by call':<30} |",
        [
            f"| {r.rollouts:>8} | {sum(r.api_requests.values()):>8} | {r.ticks:13.0f} | {r.requests_per_rollout_tick:20.3f} | "
            + f"{', '.join(f'{kind} {n}' for kind, n in sorted(r.api_requests.items())) or 'none':<30} |"
            for r in results
        ],
    )
    lines += ["", f"ratios against {base.rollouts} rollouts (same run):"]
    ratio_rows = []
    for r in results[1:]:
        per_extra = (r.rss_start_kib - base.rss_start_kib) / (r.rollouts - base.rollouts)
        ratio_rows.append(
            f"| {r.rollouts:>8} | {r.rollouts / base.rollouts:10g} | "
            f"{ratio(r.per_rollout_round_s, base.per_rollout_round_s):18.2f} | "
            f"{ratio(r.reconcile_mean_s, base.reconcile_mean_s):14.2f} | "
            f"{ratio(r.cpu_per_reconcile_s, base.cpu_per_reconcile_s):18.2f} | "
            f"{ratio(r.rss_start_kib, base.rss_start_kib):5.2f} | {per_extra:21.1f} |"
        )
    lines += _table(
        f"| {'rollouts':>8} | {'rollouts x':>10} | {'round ms/rollout x':>18} | {'reconcile ms x':>14} | "
        f"{'CPU ms/reconcile x':>18} | {'RSS x':>5} | {'KiB per extra rollout':>21} |",
        ratio_rows,
    )
    lines += ["", *targets(results)]
    lines += [
        "",
        (
            "ready: spawn -> /readyz; first/all stable: spawn -> the first/last status.stableVersion (a watch); "
            "round = first -> last, ms/rollout = round / (N-1); reconciles/s and reconcile ms: modelrollout_reconcile_seconds "
            "(delta count / window, delta sum / delta count); asked/s = N / tick; CPU: /proc/<pid>/stat, operator "
            "(first round: first -> last stable) and this process (emulator, watch, KServe double; first round: spawn -> last stable), "
            "as a share of one core; API writes: the emulator's resourceVersion "
            "over the window; RSS: the operator's VmRSS at the window's start and end"
        ),
        (
            f"setup: services ready in {start_s:.1f} s; "
            + "; ".join(f"{r.rollouts} models and rollouts created in {r.setup_s:.1f} s" for r in results)
        ),
        f"machine: {machine()}; took {total_s:.0f} s",
    ]
    return "\n".join(lines)


def targets(results: list[SizeResult]) -> list[str]:
    """Issue 15's targets, each with its measured value and whether it is met (benchmarks/targets.py)."""
    idle = max(r.requests_per_rollout_tick for r in results)
    sizes = " and ".join(str(r.rollouts) for r in results)
    stated = [Target("idle API requests per rollout per tick", "<=", TARGET_IDLE_REQUESTS, idle, note=f"the most of {sizes} rollouts")]
    at_target = [r for r in results if r.rollouts >= TARGET_N]
    if at_target:
        r = at_target[-1]
        rss = max(r.rss_start_kib, r.rss_end_kib) / 1024
        stated.append(Target(f"RSS with {r.rollouts} ModelRollouts", "<", TARGET_RSS_MIB, rss, unit=" MiB"))
    lines = render_targets(stated).splitlines()
    if at_target:
        lines.append(
            f"{r.rollouts} ModelRollouts: first round {r.round_s:.1f} s (spawn -> all stable {r.all_stable_s:.1f} s); steady "
            f"{r.reconciles_per_s:.1f} reconciles/s of {r.asked_per_s:.1f} asked ({ratio(r.reconciles_per_s, r.asked_per_s):.2f})"
        )
    else:
        lines.append(
            f"(RSS with {TARGET_N} ModelRollouts < {TARGET_RSS_MIB:g} MiB: not measured in this run, whose largest size is "
            f"{results[-1].rollouts}; the default size is {TARGET_N}, as make bench runs it)"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.operator_scale", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_N} rollouts against {BASELINE_N}, a {QUICK_TICK_S:g} s tick, a two-tick window"
    )
    parser.add_argument("--rollouts", type=int, help=f"the measured size (default {FULL_N}; quick {QUICK_N})")
    parser.add_argument("--window", type=float, help="steady-state window in seconds (default 60; quick two ticks)")
    parser.add_argument("--mlflow-uri", help="use this running MLflow server instead of starting one")
    parser.add_argument("--prometheus-url", help="use this running Prometheus instead of starting one")
    args = parser.parse_args(argv)
    tick = QUICK_TICK_S if args.quick else TICK_S
    n = args.rollouts if args.rollouts is not None else (QUICK_N if args.quick else FULL_N)
    window = args.window if args.window is not None else (2 * tick if args.quick else Config.window_s)
    if n <= BASELINE_N:
        parser.error(f"--rollouts must be more than the baseline's {BASELINE_N}")
    if window < tick:
        parser.error(f"--window must be at least one tick ({tick:g} s)")
    config = Config(sizes=(BASELINE_N, n), tick_s=tick, window_s=window)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as workdir:
        results, start_s = run(config, Path(workdir), args.mlflow_uri, args.prometheus_url)
    print(render(config, results, start_s, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
