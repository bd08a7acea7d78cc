"""The Prometheus metrics provider and the local Prometheus, against a real Prometheus.

A `prometheus_client` exporter plays the local router: it exports the router's metric names and
labels (canary/decision/templates.py) with known values, Prometheus scrapes it every second, and every
builtin `local` template, rendered for a version, must give the number those values imply.

How the expected numbers are exact: every series is created at 0 and scraped once before any
traffic, so Prometheus' `increase()` does not extrapolate before the first sample (a counter that
starts at 0 cannot have been lower). Evaluated at the timestamp of the last scrape (`at`) it does
not extrapolate after it either, so a `samples` query gives the count exactly. Ratios and
`histogram_quantile` are exact at any time: numerator and denominator come from the same scrapes
and share the extrapolation factor.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import Counter, Histogram

from canary.decision import templates
from canary.decision.metrics import (
    MetricsProvider,
    MetricsUnavailable,
    PrometheusProvider,
    QueryFailed,
    QueryRejected,
    UnexpectedResult,
    escape_label_value,
    render,
)
from controller.local.prometheus_server import (
    PrometheusServer,
    PrometheusServerError,
    read_pidfile,
    remove_targets,
    stop_from_pidfile,
    write_targets,
)
from tests.fixtures.prometheus import (
    MetricsExporter,
    free_port,
    query,
    start_exporter,
    wait_for_sample,
    wait_for_target_up,
)

LABELS = ("rollout", "model", "version", "role")
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)
MODEL = "iris-classifier"
INTERVAL = "2m"  # longer than the module runs, so every window starts before the first sample
CANDIDATE = ("4", templates.CANARY)
STABLE = ("3", "stable")
SHADOW = ("4", templates.SHADOW)
IDLE = ("5", templates.CANARY)  # series exist, no traffic
NO_ERROR_SERIES = ("6", templates.CANARY)  # requests, but the error counter was never created
HOSTILE = ('7"} or vector(1) or x{a="\\', templates.CANARY)  # a version label no one should break


@dataclass
class ServingMetrics:
    """The router's metric families in the session exporter, for one rollout name."""

    rollout: str
    requests: Counter
    errors: Counter
    duration: Histogram
    comparisons: Counter
    agreements: Counter
    feedback: Counter
    correct: Counter

    def create(self, version: str, role: str, *, errors: bool = True) -> None:
        """Create the version's series at 0, as the router must do before any request."""
        labels = (self.rollout, MODEL, version, role)
        families = [
            self.requests,
            self.duration,
            self.comparisons,
            self.agreements,
            self.feedback,
            self.correct,
        ]
        for family in families + ([self.errors] if errors else []):
            family.labels(*labels)

    def drive(
        self,
        version: str,
        role: str,
        *,
        durations: Sequence[float] = (),
        errors: int = 0,
        compared: int = 0,
        agreed: int = 0,
        feedback: int = 0,
        correct: int = 0,
    ) -> None:
        labels = (self.rollout, MODEL, version, role)
        for seconds in durations:
            self.requests.labels(*labels).inc()
            self.duration.labels(*labels).observe(seconds)
        if errors:
            self.errors.labels(*labels).inc(errors)
        self.comparisons.labels(*labels).inc(compared)
        self.agreements.labels(*labels).inc(agreed)
        self.feedback.labels(*labels).inc(feedback)
        self.correct.labels(*labels).inc(correct)

    def selector(self, metric: str, version: str, role: str, extra: str = "") -> str:
        """A selector for one of the version's series; `extra` adds matchers such as `le="0.1",`."""
        matchers = f'rollout="{self.rollout}",version="{escape_label_value(version)}",role="{role}"'
        return f"{metric}{{{extra}{matchers}}}"


@dataclass(frozen=True)
class Driven:
    metrics: ServingMetrics
    prometheus_url: str
    at: float  # timestamp of a scrape that holds every final value


@pytest.fixture(scope="module")
def driven(prometheus_server: PrometheusServer, metrics_exporter: MetricsExporter) -> Iterator[Driven]:
    """Known traffic for one rollout, scraped: the state every template test reads."""
    registry = metrics_exporter.registry
    families = dict(
        requests=Counter("modelrollout_requests", "requests answered", LABELS, registry=registry),
        errors=Counter("modelrollout_request_errors", "failed requests", LABELS, registry=registry),
        duration=Histogram(
            "modelrollout_request_duration_seconds", "latency", LABELS, buckets=BUCKETS, registry=registry
        ),
        comparisons=Counter("modelrollout_shadow_comparisons", "mirrored", LABELS, registry=registry),
        agreements=Counter("modelrollout_shadow_agreements", "agreeing", LABELS, registry=registry),
        feedback=Counter("modelrollout_feedback", "labelled", LABELS, registry=registry),
        correct=Counter("modelrollout_feedback_correct", "correct", LABELS, registry=registry),
    )
    metrics = ServingMetrics(rollout=f"iris-{uuid.uuid4().hex[:8]}", **families)
    try:
        for version, role in (CANDIDATE, STABLE, SHADOW, IDLE, HOSTILE):
            metrics.create(version, role)
        metrics.create(*NO_ERROR_SERIES, errors=False)
        url = prometheus_server.url
        # The zeros must be scraped before any traffic: they are the first sample of every series.
        wait_for_sample(url, metrics.selector("modelrollout_requests_total", *NO_ERROR_SERIES), 0.0)

        metrics.drive(*CANDIDATE, durations=[0.07] * 16 + [0.4] * 4, errors=3, feedback=8, correct=5)
        metrics.drive(*STABLE, durations=[0.2] * 30, feedback=10, correct=9)
        metrics.drive(*SHADOW, compared=12, agreed=9)
        metrics.drive(*NO_ERROR_SERIES, durations=[0.07] * 5)
        metrics.drive(*HOSTILE, durations=[0.07] * 4)

        finals = [
            ("modelrollout_requests_total", CANDIDATE, 20),
            ("modelrollout_request_errors_total", CANDIDATE, 3),
            ("modelrollout_request_duration_seconds_bucket", CANDIDATE, 16),
            ("modelrollout_request_duration_seconds_count", CANDIDATE, 20),
            ("modelrollout_feedback_total", CANDIDATE, 8),
            ("modelrollout_feedback_correct_total", CANDIDATE, 5),
            ("modelrollout_requests_total", STABLE, 30),
            ("modelrollout_request_duration_seconds_count", STABLE, 30),
            ("modelrollout_feedback_total", STABLE, 10),
            ("modelrollout_feedback_correct_total", STABLE, 9),
            ("modelrollout_shadow_comparisons_total", SHADOW, 12),
            ("modelrollout_shadow_agreements_total", SHADOW, 9),
            ("modelrollout_requests_total", NO_ERROR_SERIES, 5),
            ("modelrollout_requests_total", HOSTILE, 4),
        ]
        stamps = []
        for metric, (version, role), value in finals:
            extra = 'le="0.1",' if metric.endswith("_bucket") else ""
            selector = metrics.selector(metric, version, role, extra)
            stamps.append(wait_for_sample(url, selector, float(value)).timestamp)
        yield Driven(metrics=metrics, prometheus_url=url, at=max(stamps))
    finally:
        for family in families.values():
            registry.unregister(family)


@pytest.fixture
def provider(prometheus_server: PrometheusServer) -> Iterator[PrometheusProvider]:
    with PrometheusProvider(prometheus_server.url) as provider:
        yield provider


def variables(driven: Driven, version: str, role: str) -> dict[str, str]:
    return {
        "rollout": driven.metrics.rollout,
        "model": MODEL,
        "namespace": "default",
        "stable_version": STABLE[0],
        "candidate_version": CANDIDATE[0],
        "version": version,
        "role": role,
        "interval": INTERVAL,
    }


# (template, who) -> (value, samples). Latencies follow from histogram_quantile's linear
# interpolation inside a bucket: 16 x 0.07 s and 4 x 0.4 s give p50 = 0.05 + 0.05 * 10/16,
# p95 = 0.25 + 0.25 * (19 - 16)/4, p99 = 0.25 + 0.25 * (19.8 - 16)/4; 30 x 0.2 s give
# 0.1 + 0.15 * q.
EXPECTED: dict[tuple[str, tuple[str, str]], tuple[float, float]] = {
    ("latency_p50", CANDIDATE): (0.08125, 20),
    ("latency_p95", CANDIDATE): (0.4375, 20),
    ("latency_p99", CANDIDATE): (0.4875, 20),
    ("error_rate", CANDIDATE): (3 / 20, 20),
    ("accuracy", CANDIDATE): (5 / 8, 8),
    ("shadow_agreement", SHADOW): (9 / 12, 12),
    ("latency_p50", STABLE): (0.175, 30),
    ("latency_p95", STABLE): (0.2425, 30),
    ("latency_p99", STABLE): (0.2485, 30),
    ("error_rate", STABLE): (0.0, 30),  # no errors is 0, not "no data": the series exists at 0
    ("accuracy", STABLE): (0.9, 10),
}


# The quality templates (calibration, label lag, drift) read series this fixture does not drive:
# tests/integration/test_router.py drives them through the real router and covers each one.
TRAFFIC_TEMPLATES = sorted(set(templates.LOCAL) - set(templates.QUALITY))


def test_every_builtin_local_template_is_covered() -> None:
    assert {name for name, _ in EXPECTED} == set(TRAFFIC_TEMPLATES)
    baselines = {name for name, who in EXPECTED if who == STABLE}
    assert baselines == {name for name in TRAFFIC_TEMPLATES if templates.LOCAL[name].has_baseline}


@pytest.mark.parametrize(("name", "who"), list(EXPECTED), ids=[f"{n}-{w[1]}" for n, w in EXPECTED])
def test_template_gives_the_driven_value_and_sample_count(
    driven: Driven, provider: PrometheusProvider, name: str, who: tuple[str, str]
) -> None:
    template = templates.LOCAL[name]
    value, samples = EXPECTED[(name, who)]
    bound = variables(driven, *who)
    assert template.samples is not None

    assert provider.query_value(render(template.query, bound)) == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert provider.query_value(render(template.samples, bound), at=driven.at) == pytest.approx(
        samples, abs=1e-9
    )


def test_samples_now_include_extrapolation_to_the_window_end(
    driven: Driven, provider: PrometheusProvider
) -> None:
    # At "now" Prometheus extrapolates increase() from the last sample to the window end (up to
    # 1.1 average scrape gaps): the count is never below the true one, and above it by at most
    # 1.1 / (samples - 1) of it, so at most 2.1 times it with the fewest (two) samples.
    query_text = render(templates.LOCAL["error_rate"].samples or "", variables(driven, *CANDIDATE))
    count = provider.query_value(query_text)
    assert count is not None and 20 <= count <= 20 * 2.1


def test_provider_satisfies_the_port(provider: PrometheusProvider) -> None:
    port: MetricsProvider = provider
    assert port.query_value("vector(2.5)") == 2.5


@pytest.mark.parametrize("name", TRAFFIC_TEMPLATES)
def test_version_without_traffic_is_no_data_but_zero_samples(
    driven: Driven, provider: PrometheusProvider, name: str
) -> None:
    # Latency over no requests is histogram_quantile of zeros (NaN), a ratio is 0/0 (NaN).
    template = templates.LOCAL[name]
    bound = variables(driven, *IDLE)
    assert provider.query_value(render(template.query, bound)) is None
    assert provider.query_value(render(template.samples or "", bound)) == 0.0


@pytest.mark.parametrize("name", sorted(templates.LOCAL))
def test_version_that_never_existed_is_no_data(
    driven: Driven, provider: PrometheusProvider, name: str
) -> None:
    template = templates.LOCAL[name]
    bound = variables(driven, "999", templates.CANARY)
    assert provider.query_value(render(template.query, bound)) is None
    assert provider.query_value(render(template.samples or "", bound)) is None


def test_role_separates_shadow_from_canary_traffic(driven: Driven, provider: PrometheusProvider) -> None:
    # The candidate's shadow role has no requests of its own here; its canary role has 20.
    bound = variables(driven, *SHADOW)
    assert provider.query_value(render(templates.LOCAL["error_rate"].query, bound)) is None


def test_error_rate_needs_the_error_series_to_exist(driven: Driven, provider: PrometheusProvider) -> None:
    # A router that creates the error counter only on the first error makes an error-free
    # version read as "no data" instead of 0: it must create every series at startup.
    bound = variables(driven, *NO_ERROR_SERIES)
    assert provider.query_value(render(templates.LOCAL["latency_p50"].query, bound)) == pytest.approx(0.075)
    assert provider.query_value(render(templates.LOCAL["error_rate"].query, bound)) is None


def test_escaped_label_values_match_exactly(driven: Driven, provider: PrometheusProvider) -> None:
    bound = variables(driven, *HOSTILE)
    samples = render(templates.LOCAL["error_rate"].samples or "", bound)
    assert provider.query_value(samples, at=driven.at) == pytest.approx(4)
    # Unescaped, the same value would have closed the matcher and added `or vector(1)`.
    injected = render(
        templates.LOCAL["error_rate"].samples or "", variables(driven, '"} or vector(1) or x{a="', "canary")
    )
    assert provider.query_value(injected) is None


def test_several_series_is_an_error_naming_the_count(driven: Driven, provider: PrometheusProvider) -> None:
    promql = f'sum by (version) (modelrollout_requests_total{{rollout="{driven.metrics.rollout}"}})'
    with pytest.raises(
        UnexpectedResult, match=r"query returned 5 series \(.*\), a check needs one number"
    ) as error:
        provider.query_value(promql)
    assert "\n" not in str(error.value)


def test_range_vector_is_an_error(driven: Driven, provider: PrometheusProvider) -> None:
    promql = driven.metrics.selector("modelrollout_requests_total", *CANDIDATE) + "[1m]"
    with pytest.raises(UnexpectedResult, match="range vector"):
        provider.query_value(promql)


@pytest.mark.parametrize(
    ("promql", "value"), [("1 + 1", 2.0), ("0 / 0", None), ("1 / 0", None), ("-1 / 0", None)]
)
def test_scalars_are_values_and_nan_or_inf_is_no_data(
    provider: PrometheusProvider, promql: str, value: float | None
) -> None:
    assert provider.query_value(promql) == value


def test_string_result_is_an_error(provider: PrometheusProvider) -> None:
    with pytest.raises(UnexpectedResult, match="not a number"):
        provider.query_value('"fast"')


def test_broken_query_is_rejected_with_prometheus_message(provider: PrometheusProvider) -> None:
    promql = "sum(rate(modelrollout_requests_total[1m])"
    with pytest.raises(QueryRejected) as error:
        provider.query_value(promql)
    message = str(error.value)
    assert "parse error: unclosed left parenthesis" in message
    assert message.endswith(promql) and "\n" not in message


def test_type_error_in_query_is_rejected(provider: PrometheusProvider) -> None:
    with pytest.raises(QueryRejected, match="ranges only allowed for vector selectors"):
        provider.query_value("rate(sum(modelrollout_requests_total)[1m])")


def test_query_that_fails_on_the_data_is_query_failed(driven: Driven, provider: PrometheusProvider) -> None:
    both = f'modelrollout_requests_total{{rollout="{driven.metrics.rollout}"}}'
    with pytest.raises(QueryFailed) as error:
        provider.query_value(f"{both} + on() {both}")
    message = str(error.value)
    assert message.startswith("Prometheus could not evaluate the query (execution): found duplicate series")
    assert "many-to-many matching not allowed" in message and "\n" not in message


def test_check_query_validates_without_judging(driven: Driven, provider: PrometheusProvider) -> None:
    rollout = driven.metrics.rollout
    assert provider.check_query(f'sum by (version) (modelrollout_requests_total{{rollout="{rollout}"}})') == 5
    assert provider.check_query('sum(modelrollout_requests_total{rollout="no-such-rollout"})') == 0
    assert provider.check_query("1") == 1
    with pytest.raises(QueryRejected, match="parse error"):
        provider.check_query("sum(")


def test_metric_names_lists_what_prometheus_holds(driven: Driven, provider: PrometheusProvider) -> None:
    names = provider.metric_names()
    assert {"modelrollout_requests_total", "modelrollout_request_duration_seconds_bucket", "up"} <= set(names)
    assert "kn_serving_invocation_duration_seconds_bucket_never_exported" not in names
    with pytest.raises(MetricsUnavailable, match="cannot connect to Prometheus"):
        PrometheusProvider(f"http://127.0.0.1:{free_port()}").metric_names()


def test_closed_port_is_unavailable_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(
        MetricsUnavailable, match=f"cannot connect to Prometheus at {url}: .*Connection refused"
    ):
        PrometheusProvider(url).query_value("up")
    assert time.monotonic() - started < 1.0


def test_silent_server_is_unavailable_after_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(MetricsUnavailable, match=f"Prometheus at {url} did not answer within 0.3 s"):
            PrometheusProvider(url, timeout=0.3).query_value("up")
        assert time.monotonic() - started < 2.0


def test_url_that_is_not_prometheus_is_unavailable(
    metrics_exporter: MetricsExporter, prometheus_server: PrometheusServer
) -> None:
    with pytest.raises(MetricsUnavailable, match="did not answer like a Prometheus API"):
        PrometheusProvider(f"http://{metrics_exporter.target}").query_value("up")
    with pytest.raises(MetricsUnavailable, match="answered HTTP 404"):
        PrometheusProvider(f"{prometheus_server.url}/wrong/").query_value("up")


# --- the local Prometheus process -------------------------------------------------------------


def test_session_server_is_recorded_in_its_pidfile(prometheus_server: PrometheusServer) -> None:
    record = read_pidfile(prometheus_server.data_dir)
    assert record is not None and record.url == prometheus_server.url
    assert prometheus_server.is_running()
    with pytest.raises(PrometheusServerError, match=f"already running for {prometheus_server.data_dir}"):
        PrometheusServer(prometheus_server.data_dir, port=free_port()).start()
    assert read_pidfile(prometheus_server.data_dir) == record  # the failed start touched nothing


def test_another_process_stops_it_through_the_pidfile(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path, port=free_port())
    server.start(timeout=30)
    try:
        record = read_pidfile(tmp_path)
        assert record is not None
        stop = (
            "import sys; from controller.local.prometheus_server import stop_from_pidfile; "
            "print(stop_from_pidfile(sys.argv[1]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", stop, str(tmp_path)], capture_output=True, text=True, timeout=30
        )
        assert out.stdout.strip() == "True", out.stderr
        assert read_pidfile(tmp_path) is None
        assert not (tmp_path / "prometheus.pid").exists()
        # The stopper returns once the process no longer runs Prometheus (its command line is gone,
        # which under load can be a moment before our child shows as exited): allow that moment.
        deadline = time.monotonic() + 5
        while server.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.is_running()
        assert stop_from_pidfile(tmp_path) is False  # `down` twice is fine
    finally:
        server.stop()


def test_port_in_use_fails_with_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        server = PrometheusServer(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(PrometheusServerError, match="exited with code") as error:
            server.start(timeout=30)
    assert "address already in use" in str(error.value)
    assert read_pidfile(tmp_path) is None and not (tmp_path / "prometheus.pid").exists()
    assert not server.is_running()


def test_timeout_stops_the_process_and_reports_the_log(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path, port=free_port())
    with pytest.raises(PrometheusServerError, match=r"was not ready on .* within 0 s; last lines of"):
        server.start(timeout=0)
    assert not server.is_running() and not (tmp_path / "prometheus.pid").exists()


def test_missing_binary_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        PrometheusServerError, match=r"not found on PATH: install it with `apt-get install prometheus`"
    ):
        PrometheusServer(tmp_path / "data", port=free_port()).start()
    assert not (tmp_path / "data" / "prometheus.pid").exists()


def test_targets_come_and_go_without_a_restart(prometheus_server: PrometheusServer) -> None:
    """A new target file is scraped within seconds; one written before its process starts, within
    one interval of the process listening; a removed one stops being scraped."""
    url, data_dir = prometheus_server.url, prometheus_server.data_dir
    live = start_exporter()
    later_port = free_port()
    later: MetricsExporter | None = None
    try:
        written = time.monotonic()
        write_targets(data_dir, "pytest-live", [live.target], {"component": "live"})
        write_targets(data_dir, "pytest-later", [f"127.0.0.1:{later_port}"], {"component": "later"})
        wait_for_target_up(url, live.target)
        pickup = time.monotonic() - written
        assert pickup < 16, f"new target took {pickup:.1f} s"
        # The pre-registered address is already scraped (and down): both files came in one update.
        wait_for_sample(url, f'up{{instance="127.0.0.1:{later_port}"}}', 0.0, timeout=12)
        labels = query(url, f'up{{instance="{live.target}"}}')[0]["metric"]
        assert labels["component"] == "live" and labels["job"] == "modelrollout"

        later = start_exporter(port=later_port)
        listening = time.monotonic()
        wait_for_target_up(url, later.target, timeout=5)
        assert time.monotonic() - listening < 3.0

        removed = time.monotonic()
        assert remove_targets(data_dir, "pytest-live") and remove_targets(data_dir, "pytest-later")
        deadline = removed + 20
        while query(url, f'up{{instance=~"{live.target}|{later.target}"}}'):
            assert time.monotonic() < deadline, "removed targets are still scraped after 20 s"
            time.sleep(0.2)
    finally:
        remove_targets(data_dir, "pytest-live")
        remove_targets(data_dir, "pytest-later")
        live.stop()
        if later is not None:
            later.stop()
