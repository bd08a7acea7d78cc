"""Knative's queue-proxy as Prometheus scrapes it: each simulated pod its own scrape target.

What a queue-proxy exports, by release (read in knative/serving and the libraries it vendors):

- **Knative >= 1.19** (`QueueProxyPods(legacy=False)`), at `knative-v1.21.0`:
  - `pkg/queue/request_metric.go` L31-32, L60-65, L99-108: the histogram
    `kn.serving.invocation.duration`, unit `s`, bounds 0.005 … 10 (`LATENCY_BOUNDS`), scope
    `knative.dev/serving/pkg/queue`, its only attribute `http.response.status_code`; probes are not
    recorded (L90-93), nor the breaker's 503s (the handler sits inside the breaker).
  - knative/pkg `observability/metrics/prometheus_enabled.go` L33-35 (at the commit 1.21.0 vendors,
    4a022ed9999a): `otelprom.New(WithTranslationStrategy(UnderscoreEscapingWithSuffixes))` and no other
    option, so (opentelemetry-go `exporters/prometheus/v0.61.0` exporter.go L34-37, L196-256, L636-656;
    prometheus/otlptranslator v1.0.0 metric_namer.go, label_namer.go): the series are
    `kn_serving_invocation_duration_seconds_bucket/_sum/_count{http_response_status_code,
    otel_scope_name, otel_scope_version="", otel_scope_schema_url=""}` and the resource attributes
    appear only on `target_info` (gauge 1, no scope labels), dots turned into underscores.
  - `pkg/queue/sharedmain/otel.go` L91-129: the resource: `container.name=queue-proxy`,
    `k8s.namespace.name`, `k8s.pod.name`, `service.version`, `service.name`, `service.instance.id`
    (= the pod), `kn.service.name`/`kn.configuration.name`/`kn.revision.name`, and the SDK's
    `telemetry.sdk.*`.
  - otelhttp's server histogram `http_server_request_duration_seconds` is on the same page
    (`pkg/queue/sharedmain/handlers.go` L88-96): exported too, so that a query matching the wrong
    family by its labels would count twice and fail a test.
  - Served on `:9091/metrics` (`otel.go` L51-54): each pod is one scrape target, so Prometheus gives
    every series of a pod the same `job` and `instance` as its `target_info` — which is what the
    `knative` templates join on.
- **Knative <= 1.18** (`legacy=True`), at `knative-v1.18.0`, `pkg/queue/request_metric.go` L37-39,
  L50-57, L142-199 and the OpenCensus exporter it vendors: `revision_app_request_count` (no `_total`)
  and `revision_app_request_latencies_bucket/_sum/_count` in milliseconds, with `pod_name`,
  `container_name`, `response_code`, `response_code_class` and the resource labels `namespace_name`,
  `service_name`, `configuration_name`, `revision_name` on every series.

Prometheus picks up a new file_sd target only after seconds, so the pods are a pool of slots
registered when the pool starts (one target each, `__metrics_path__=/pods/<slot>/metrics`, its own
`instance`), all scraped from then on; a revision takes a free slot when it first serves.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from controller.local.ports import free_port
from controller.local.prometheus_server import remove_targets, write_targets
from tests.fixtures.prometheus import wait_for_target_up

SCOPE = "knative.dev/serving/pkg/queue"
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
LEGACY_BOUNDS_MS = (5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 900,
                    1000, 2000, 5000, 10000, 20000, 50000, 100000)  # fmt: skip
_PATH = re.compile(r"/pods/(\d+)/metrics")


def _go_float(value: float) -> str:
    """A bucket bound as Go's exporters write it (`1`, not `1.0`): Prometheus 2 keeps `le` as written."""
    return format(value, "g")


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> _Histogram:
        return cls(bounds, [0] * (len(bounds) + 1))

    def observe(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))
        self.counts[index] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, rows = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            rows.append(("+Inf" if bound == float("inf") else _go_float(bound), float(cumulative)))
        return rows


@dataclass
class QueueProxyPod:
    """One replica of one revision: what its queue-proxy has counted so far."""

    namespace: str
    isvc: str
    revision: str
    name: str
    legacy: bool
    # by HTTP status code
    invocations: dict[int, _Histogram] = field(default_factory=dict)
    server: dict[int, _Histogram] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def serve(self, seconds: float, status: int) -> None:
        """One client request the user container answered with `status` after `seconds`."""
        bounds = LEGACY_BOUNDS_MS if self.legacy else LATENCY_BOUNDS
        value = seconds * 1000 if self.legacy else seconds
        with self._lock:
            self.invocations.setdefault(status, _Histogram.empty(bounds)).observe(value)
            self.server.setdefault(status, _Histogram.empty(LATENCY_BOUNDS)).observe(seconds)

    def prepare(self, status: int) -> None:
        """Export `status`'s series at 0 before any request (a real queue-proxy writes a series at its
        first request; a test that wants every increase() exact starts from 0)."""
        bounds = LEGACY_BOUNDS_MS if self.legacy else LATENCY_BOUNDS
        with self._lock:
            self.invocations.setdefault(status, _Histogram.empty(bounds))
            self.server.setdefault(status, _Histogram.empty(LATENCY_BOUNDS))

    def families(self) -> Iterable[object]:
        with self._lock:
            if self.legacy:
                yield from self._legacy()
            else:
                yield from self._otel()

    def _otel(self) -> Iterable[object]:
        scope = {"otel_scope_name": SCOPE, "otel_scope_schema_url": "", "otel_scope_version": ""}
        duration = HistogramMetricFamily(
            "kn_serving_invocation_duration_seconds", "The duration of task execution",
            labels=("http_response_status_code", *scope),
        )  # fmt: skip
        for status, histogram in sorted(self.invocations.items()):
            duration.add_metric([str(status), *scope.values()], histogram.buckets(), histogram.total)
        yield duration
        server = HistogramMetricFamily(
            "http_server_request_duration_seconds", "Duration of HTTP server requests.",
            labels=("http_request_method", "http_response_status_code", "network_protocol_name",
                    "network_protocol_version", "otel_scope_name", "otel_scope_schema_url", "otel_scope_version",
                    "server_address", "url_scheme"),
        )  # fmt: skip
        for status, histogram in sorted(self.server.items()):
            labels = ["POST", str(status), "http", "1.1",
                      "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "", "0.64.0",
                      f"{self.isvc}-predictor.{self.namespace}.svc.cluster.local", "http"]  # fmt: skip
            server.add_metric(labels, histogram.buckets(), histogram.total)
        yield server
        resource = {
            "container_name": "queue-proxy",
            "k8s_namespace_name": self.namespace,
            "k8s_pod_name": self.name,
            "kn_configuration_name": f"{self.isvc}-predictor",
            "kn_revision_name": self.revision,
            "kn_service_name": f"{self.isvc}-predictor",
            "service_instance_id": self.name,
            "service_name": f"{self.isvc}-predictor",
            "service_version": "4004491",
            "telemetry_sdk_language": "go",
            "telemetry_sdk_name": "opentelemetry",
            "telemetry_sdk_version": "1.39.0",
        }
        info = GaugeMetricFamily("target_info", "Target metadata", labels=tuple(resource))
        info.add_metric(list(resource.values()), 1.0)
        yield info

    def _legacy(self) -> Iterable[object]:
        names = ("namespace_name", "service_name", "configuration_name", "revision_name", "pod_name", "container_name")
        values = [self.namespace, f"{self.isvc}-predictor", f"{self.isvc}-predictor", self.revision, self.name, "queue-proxy"]
        # OpenCensus writes `# TYPE revision_app_request_count counter` with no `_total`; prometheus_client
        # cannot write a counter by that name, so it goes out untyped: Prometheus 2 stores the samples alike.
        count = Metric("revision_app_request_count", "The number of requests that are routed to queue-proxy", "unknown")
        latency = HistogramMetricFamily(
            "revision_app_request_latencies", "The response time in millisecond",
            labels=(*names, "response_code", "response_code_class"),
        )  # fmt: skip
        for status, histogram in sorted(self.invocations.items()):
            codes = [str(status), f"{status // 100}xx"]
            labels = dict(zip((*names, "response_code", "response_code_class"), (*values, *codes), strict=True))
            count.add_sample("revision_app_request_count", labels, float(sum(histogram.counts)))
            latency.add_metric([*values, *codes], histogram.buckets(), histogram.total)
        yield count
        yield latency


def _pod_address(port: int, slot: int) -> str:
    """A pod address unique to this pool's slot (pools started side by side must not share one)."""
    return f"10.{port >> 8}.{port & 255}.{slot + 2}:9091"


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


class QueueProxyPods:
    """A pool of `slots` simulated pods behind one HTTP server, each registered with Prometheus."""

    def __init__(self, prometheus_data_dir: Path, slots: int = 24, legacy: bool = False) -> None:
        self.legacy = legacy
        self._data_dir = Path(prometheus_data_dir)
        if not 0 < slots <= 250:
            raise ValueError(f"slots must be 1..250, got {slots}")
        self._slots: list[QueueProxyPod | None] = [None] * slots
        self._lock = threading.Lock()
        self.port = free_port()
        self._server: WSGIServer = make_server(
            "127.0.0.1", self.port, self._app, server_class=ThreadingWSGIServer, handler_class=_Quiet
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="queue-proxy-pods")
        self._thread.start()
        self.target_names = []
        for slot in range(slots):
            name = f"queue-proxy-{self.port}-{slot}"
            # A pod's address as Prometheus' kubernetes_sd would give it: its own instance per pod.
            labels = {"__metrics_path__": f"/pods/{slot}/metrics", "instance": _pod_address(self.port, slot)}
            write_targets(self._data_dir, name, [f"127.0.0.1:{self.port}"], labels)
            self.target_names.append(name)

    def pod(self, namespace: str, isvc: str, revision: str) -> QueueProxyPod:
        """The (one) pod of `revision`, taking a free slot the first time it serves."""
        with self._lock:
            for pod in self._slots:
                if pod is not None and (pod.namespace, pod.revision) == (namespace, revision):
                    return pod
            free = next((i for i, pod in enumerate(self._slots) if pod is None), None)
            if free is None:
                raise RuntimeError(f"all {len(self._slots)} queue-proxy slots are taken: release a namespace's pods")
            digest = hashlib.sha1(f"{namespace}/{revision}".encode()).hexdigest()
            name = f"{revision}-deployment-{digest[:10]}-{digest[10:15]}"
            self._slots[free] = QueueProxyPod(namespace, isvc, revision, name, self.legacy)
            return self._slots[free]

    def wait_scraped(self, prometheus_url: str) -> None:
        """Wait until Prometheus scrapes every slot (a new file_sd target takes seconds)."""
        for slot in range(len(self._slots)):
            wait_for_target_up(prometheus_url, _pod_address(self.port, slot))

    def addresses(self) -> list[tuple[QueueProxyPod, str]]:
        """Each pod in a slot with the `instance` Prometheus gives its series."""
        with self._lock:
            return [(pod, _pod_address(self.port, slot)) for slot, pod in enumerate(self._slots) if pod is not None]

    def pods(self, namespace: str) -> list[QueueProxyPod]:
        with self._lock:
            return [p for p in self._slots if p is not None and p.namespace == namespace]

    def release(self, namespace: str) -> None:
        """Free the slots of `namespace`'s pods (their series go stale at the next scrape)."""
        with self._lock:
            self._slots = [None if p is not None and p.namespace == namespace else p for p in self._slots]

    def close(self) -> None:
        for name in self.target_names:
            remove_targets(self._data_dir, name)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _app(self, environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
        match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
        slot = int(match.group(1)) if match else -1
        if not 0 <= slot < len(self._slots):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such pod\n"]
        with self._lock:
            pod = self._slots[slot]
        registry = CollectorRegistry(auto_describe=False)
        if pod is not None:
            registry.register(_PodCollector(pod))
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
        return [generate_latest(registry)]


class _PodCollector:
    def __init__(self, pod: QueueProxyPod) -> None:
        self.pod = pod

    def collect(self) -> Iterable[object]:
        return list(self.pod.families())
