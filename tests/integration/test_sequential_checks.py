"""`judge: sequential` checks through `analyse`/`evaluate` against a real Prometheus.

The local router's own metric families (canary.traffic.serving_metrics, the names and labels the local
templates query) and Knative/Istio-shaped series are exported with traffic the tests drive, per
scenario under its own rollout, revision or workload. Everything is created at 0 and scraped, then
all traffic is driven at once, and every query is evaluated at the first scrape after it
(`AtScrape`): an `increase()` over the step then counts exactly what was driven (it starts on a 0
sample and ends on the last one, so Prometheus extrapolates neither way), and the judge sees the
counts whose verdicts the expectations below are reasoned from.

The step so far (`analysed_seconds`) is STEP, longer than the module runs; the number of looks is
set through the window (`looks = STEP / window`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily

from canary.decision.analysis import AnalysisContext, CheckResult, analyse, evaluate
from canary.decision.metrics import PrometheusProvider, render
from canary.decision.spec import ModelRolloutSpec
from canary.decision.templates import KNATIVE_LEGACY, LOCAL, Template
from canary.traffic.serving_metrics import MetricFamilies, ServingMetrics
from controller.local.ports import free_port
from tests.fixtures.prometheus import query

MODEL = "iris"
STABLE, CANDIDATE = "1", "2"
PREFIX = f"seq-{uuid.uuid4().hex[:6]}"
NAMESPACE = PREFIX
STEP = 120.0  # seconds since the step's analysis began: covers every sample of this module
SCRAPE_TIMEOUT = 15.0

# Knative's queue-proxy latency buckets, in milliseconds.
QUEUE_PROXY_MS = (5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0, 400.0,
                  450.0, 500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 2000.0, 5000.0, 10000.0)  # fmt: skip
STABLE_REV, SLOW_REV, SAME_REV = "iris-predictor-00001", "iris-predictor-00002", "iris-predictor-00003"
STABLE_WL, ODD_WL = "iris-predictor-00001-deployment", "iris-predictor-00002-deployment"


def spread(n: int, low: float, high: float) -> list[float]:
    """`n` latencies spread evenly over (low, high) in a fixed order, none on a bucket bound."""
    golden = 0.6180339887
    return [low + (high - low) * ((i * golden) % 1) for i in range(1, n + 1)]


# Local scenarios (router histograms, seconds): per rollout, per side, latencies and failures,
# labelled predictions and how many of them were right.
@dataclass(frozen=True)
class Side:
    latencies: Sequence[float]
    errors: int = 0
    labelled: int = 0
    correct: int = 0


FAST_200, FAST_400 = spread(200, 0.011, 0.029), spread(400, 0.011, 0.029)
LOCAL_TRAFFIC: dict[str, dict[str, Side | None]] = {
    # 3x slower, 20% errors against 1%, 60% accuracy against 90%: regressions far beyond tolerance.
    "worse": {STABLE: Side(FAST_200, errors=2, labelled=200, correct=180),
              CANDIDATE: Side([3 * s for s in FAST_200], errors=40, labelled=200, correct=120)},
    # The same latencies, errors (0.5%) and accuracy (90%) on both sides.
    "same": {STABLE: Side(FAST_400, errors=2, labelled=400, correct=360),
             CANDIDATE: Side(FAST_400, errors=2, labelled=400, correct=360)},
    # Only 3 candidate requests and labels: below minSamples (10).
    "few": {STABLE: Side(FAST_200, errors=2, labelled=200, correct=180),
            CANDIDATE: Side(FAST_200[:3], errors=0, labelled=3, correct=3)},
    # One side has no series at all (never prepared, never served).
    "nocandidate": {STABLE: Side(FAST_200, errors=2, labelled=200, correct=180), CANDIDATE: None},
    "nostable": {STABLE: None, CANDIDATE: Side(FAST_200, errors=2, labelled=200, correct=180)},
}  # fmt: skip


def rollout(scenario: str) -> str:
    return f"{PREFIX}-{scenario}"


class AtScrape:
    """A PrometheusProvider pinned to one instant, the scrape after all traffic: `evaluate` asks
    for "now", and a fixed instant makes every increase() the exact driven count."""

    def __init__(self, provider: PrometheusProvider, at: float) -> None:
        self.provider, self.at = provider, at

    def query_value(self, promql: str) -> float | None:
        return self.provider.query_value(promql, at=self.at)

    def query_vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        return self.provider.query_vector(promql, at=self.at)


class MismatchedIstioBuckets:
    """Istio-shaped latency histograms whose two workloads report different `le` bounds, as a
    mesh upgrade mid-rollout could: series that the judge cannot compare."""

    def __init__(self) -> None:
        self.observed = 0  # every observation falls in the first bucket

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "istio_request_duration_milliseconds", "sidecar latency, ms",
            labels=("reporter", "destination_workload", "destination_workload_namespace"),
        )  # fmt: skip
        for workload, bounds in ((STABLE_WL, (50.0, 100.0, 250.0, 500.0)), (ODD_WL, (50.0, 100.0, 250.0))):
            buckets = [(str(b), float(self.observed)) for b in bounds] + [("+Inf", float(self.observed))]
            family.add_metric(["destination", workload, NAMESPACE], buckets, sum_value=30.0 * self.observed)
        yield family


@dataclass(frozen=True)
class Scraped:
    provider: AtScrape
    url: str


def _scrape_after(url: str, target: str, moment: float) -> float:
    """The timestamp of the first scrape of `target` that started after `moment` (unix seconds):
    every value it holds was set before it. Fails after SCRAPE_TIMEOUT."""
    selector = f'timestamp(up{{instance="{target}"}})'
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    seen: list[dict] = []
    while time.monotonic() < deadline:
        seen = query(url, selector)
        # A 10 ms margin: Prometheus may align a scrape's timestamp by a few milliseconds.
        stamps = [float(s["value"][1]) for s in seen if float(s["value"][1]) > moment + 0.01]
        if stamps:
            return min(stamps)
        time.sleep(0.1)
    pytest.fail(f"no scrape of the test exporter after {moment:.3f} within {SCRAPE_TIMEOUT:g} s; last: {seen}")


@pytest.fixture(scope="module")
def scraped(prometheus_server, metrics_exporter) -> Iterator[Scraped]:
    shared = metrics_exporter.registry
    families = MetricFamilies()
    router = [families.requests, families.errors, families.duration, families.feedback, families.feedback_correct]
    kn_count = Gauge(
        "revision_app_request_count", "queue-proxy requests",
        ("namespace_name", "revision_name", "response_code_class"), registry=None,
    )  # fmt: skip
    kn_latency = Histogram(
        "revision_app_request_latencies", "queue-proxy latency, ms",
        ("namespace_name", "revision_name"), buckets=QUEUE_PROXY_MS, registry=None,
    )  # fmt: skip
    istio = MismatchedIstioBuckets()
    registered: list[Any] = []
    try:
        for collector in (*router, kn_count, kn_latency, istio):
            shared.register(collector)
            registered.append(collector)
        serving = {scenario: ServingMetrics(rollout(scenario), families) for scenario in LOCAL_TRAFFIC}
        for scenario, sides in LOCAL_TRAFFIC.items():
            for version, side in sides.items():
                if side is not None:
                    serving[scenario].prepare(MODEL, version, "stable" if version == STABLE else "canary")
        for rev in (STABLE_REV, SLOW_REV, SAME_REV):
            kn_count.labels(NAMESPACE, rev, "2xx")
            kn_latency.labels(NAMESPACE, rev)
        kn_count.labels(NAMESPACE, SLOW_REV, "5xx")  # the stable never failed: no 5xx series at all
        url = prometheus_server.url
        _scrape_after(url, metrics_exporter.target, time.time())  # the zeros: every series' first sample

        for scenario, sides in LOCAL_TRAFFIC.items():
            for version, side in sides.items():
                if side is None:
                    continue
                role = "stable" if version == STABLE else "canary"
                for i, seconds in enumerate(side.latencies):
                    serving[scenario].observe_request(MODEL, version, role, seconds, failed=i < side.errors)
                serving[scenario].observe_feedback(MODEL, version, role, side.labelled, side.correct)
        # Knative: the stable and SAME_REV answer 200 requests in 20-60 ms, SLOW_REV 3x slower and
        # 40 of its 200 with a 5xx.
        for rev, factor in ((STABLE_REV, 1.0), (SAME_REV, 1.0), (SLOW_REV, 3.0)):
            for ms in spread(200, 20.0, 60.0):
                kn_latency.labels(NAMESPACE, rev).observe(factor * ms)
        kn_count.labels(NAMESPACE, STABLE_REV, "2xx").inc(200)
        kn_count.labels(NAMESPACE, SAME_REV, "2xx").inc(200)
        kn_count.labels(NAMESPACE, SLOW_REV, "2xx").inc(160)
        kn_count.labels(NAMESPACE, SLOW_REV, "5xx").inc(40)
        istio.observed = 30
        at = _scrape_after(url, metrics_exporter.target, time.time())

        with PrometheusProvider(url) as provider:
            pinned = AtScrape(provider, at)
            # The driven counts, as Prometheus holds them at `at`.
            selector = f'rollout="{rollout("worse")}",version="{CANDIDATE}"'
            assert pinned.query_value(f"sum(modelrollout_requests_total{{{selector}}})") == 200
            assert pinned.query_value(f'sum(revision_app_request_count{{revision_name="{SLOW_REV}"}})') == 200
            yield Scraped(pinned, url)
    finally:
        for collector in registered:
            shared.unregister(collector)


def spec(*metrics: dict[str, Any], provider: str = "local") -> ModelRolloutSpec:
    doc: dict[str, Any] = {
        "model": {"name": MODEL},
        "progressDeadline": "1h",  # room for any maxIntervals x the default windows
        "analysis": {"provider": provider, "metrics": list(metrics)},
    }
    if provider != "local":
        doc["target"] = {"inferenceService": "iris"}
    return ModelRolloutSpec.model_validate(doc)


def local_context(scenario: str, looks: int = 1, role: str = "canary") -> AnalysisContext:
    return AnalysisContext(
        rollout(scenario), "default", MODEL, STABLE, CANDIDATE, role, STEP / looks, analysed_seconds=STEP
    )


def knative_context(candidate_revision: str, looks: int = 1, platform: bool = True) -> AnalysisContext:
    revisions = {STABLE: STABLE_REV, CANDIDATE: candidate_revision}
    return AnalysisContext(
        "iris", NAMESPACE, MODEL, STABLE, CANDIDATE, "canary", STEP / looks,
        platform={v: {"revision": r, "inference_service": "iris"} for v, r in revisions.items()} if platform else {},
        analysed_seconds=STEP,
    )  # fmt: skip


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def prometheus_value(provider: AtScrape, template: Template, ctx: AnalysisContext, version: str, role: str) -> float | None:
    """A threshold template's own value (e.g. PromQL's histogram_quantile) over the whole step."""
    return provider.query_value(render(template.query, ctx.variables(version, role, whole_step=True)))


def sequential(name: str, template: str, tolerance: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "template": template, "judge": "sequential", "tolerance": tolerance, **settings}


CLEAR_CHECKS = (
    sequential("p95", "latency_p95", "10%"),
    sequential("errors", "error_rate", "1%"),
    sequential("acc", "accuracy", "2%"),
)


# ---------------------------------------------------------------------------------------------
# local provider


def test_clear_regressions_fail_at_the_first_look_with_the_evidence(scraped):
    ctx = local_context("worse", looks=1)
    results = by_name(analyse(spec(*CLEAR_CHECKS), ctx, scraped.provider))
    assert {name: r.verdict for name, r in results.items()} == {"p95": "fail", "errors": "fail", "acc": "fail"}

    p95 = results["p95"]
    assert p95.message.startswith("vs stable: slower in 100% of pairs") and p95.message.endswith("(interval 1/3)")
    assert "(200 vs 200 requests), +10% slower tolerated; evidence" in p95.message
    assert p95.message.endswith("fail (rank effect: slower than stable at 97.5% confidence, beyond tolerance) (interval 1/3)")
    # The p95 the judge reports is the one Prometheus computes from the same buckets.
    assert p95.candidate == pytest.approx(prometheus_value(scraped.provider, LOCAL["latency_p95"], ctx, CANDIDATE, "canary"))
    assert p95.baseline == pytest.approx(prometheus_value(scraped.provider, LOCAL["latency_p95"], ctx, STABLE, "stable"))
    assert p95.candidate > 3 * 0.029 > p95.baseline  # the slowest stable request took 29 ms
    assert p95.samples == 200
    assert p95.threshold == "sequential: at most 10% slower than stable at 95% confidence"

    errors = results["errors"]
    assert "difference +19.0 points [" in errors.message and "(20.0% of 200, stable 1.0% of 200), tolerated +1.0" in errors.message
    assert errors.message.endswith("fail (worse than stable at 95% confidence, beyond tolerance) (interval 1/3)")
    assert (errors.candidate, errors.baseline, errors.samples) == (pytest.approx(0.2), pytest.approx(0.01), 200)

    acc = results["acc"]  # worse is lower: 30 points below the stable
    assert "difference -30.0 points [" in acc.message and "(60.0% of 200, stable 90.0% of 200), tolerated -2.0" in acc.message
    assert acc.message.endswith("fail (worse than stable at 95% confidence, beyond tolerance) (interval 1/3)")
    assert (acc.candidate, acc.baseline, acc.samples) == (pytest.approx(0.6), pytest.approx(0.9), 200)
    assert acc.threshold == "sequential: at most 2 points below stable at 95% confidence"


def test_identical_versions_pass_early_when_the_interval_fits_the_tolerance(scraped):
    # 400 requests a side: the rank interval is about +-6 points around 50%, inside a 20% slowdown's
    # 80%; the error and accuracy intervals (+-2 and +-7 points) inside 5 and 10 points.
    checks = (
        sequential("p95", "latency_p95", "20%"),
        sequential("errors", "error_rate", "5%"),
        sequential("acc", "accuracy", "10%"),
    )
    results = by_name(analyse(spec(*checks), local_context("same", looks=1), scraped.provider))
    for name, result in results.items():
        assert result.verdict == "pass", result.message
        assert result.message.endswith("(interval 1/3)")
        assert result.candidate == pytest.approx(result.baseline)
    assert results["p95"].message.endswith("pass (both within tolerance at 97.5% confidence) (interval 1/3)")
    assert results["errors"].message.endswith("pass (within tolerance at 95% confidence) (interval 1/3)")


TIGHT_CHECKS = (
    sequential("p95", "latency_p95", "2%"),
    sequential("errors", "error_rate", "1%"),
    sequential("acc", "accuracy", "2%"),
)


@pytest.mark.parametrize("looks", [1, 2])
def test_identical_versions_with_a_tight_tolerance_wait_before_max_intervals(scraped, looks):
    # The same data, but no interval of 400 requests is narrow enough for 1-2% tolerances.
    results = analyse(spec(*TIGHT_CHECKS), local_context("same", looks=looks), scraped.provider)
    for result in results:
        assert result.verdict == "inconclusive", result.message
        assert result.message.endswith(f"continue (not enough evidence yet) (interval {looks}/3)")


@pytest.mark.parametrize("looks", [3, 5])
def test_identical_versions_pass_as_no_regression_found_from_max_intervals_on(scraped, looks):
    results = analyse(spec(*TIGHT_CHECKS), local_context("same", looks=looks), scraped.provider)
    for result in results:
        assert result.verdict == "pass", result.message
        assert result.message.endswith(f"continue (not enough evidence yet); no regression found in {looks} intervals")


def test_max_intervals_is_per_check(scraped):
    checks = (sequential("p95", "latency_p95", "2%", maxIntervals=2), sequential("errors", "error_rate", "1%"))
    results = by_name(analyse(spec(*checks), local_context("same", looks=2), scraped.provider))
    assert (results["p95"].verdict, results["errors"].verdict) == ("pass", "inconclusive")
    assert results["errors"].message.endswith("(interval 2/3)")


FEW_CHECKS = (
    sequential("p95", "latency_p95", "10%", noData="fail", maxIntervals=2),
    sequential("errors", "error_rate", "1%", noData="pass", maxIntervals=2),
    sequential("acc", "accuracy", "2%", maxIntervals=2),  # noData inconclusive by default
)


def test_too_few_samples_wait_before_max_intervals(scraped):
    results = by_name(analyse(spec(*FEW_CHECKS), local_context("few", looks=1), scraped.provider))
    assert {name: r.verdict for name, r in results.items()} == {"p95": "inconclusive", "errors": "inconclusive", "acc": "inconclusive"}
    assert results["p95"].message == "vs stable: candidate has 3 samples, minSamples is 10: continue (interval 1/2)"
    assert results["acc"].message == "difference: candidate has 3 samples, minSamples is 10: continue (interval 1/2)"
    assert all(r.samples == 3 for r in results.values())


def test_too_few_samples_then_follow_no_data(scraped):
    results = by_name(analyse(spec(*FEW_CHECKS), local_context("few", looks=2), scraped.provider))
    assert {name: r.verdict for name, r in results.items()} == {"p95": "fail", "errors": "pass", "acc": "inconclusive"}
    assert results["p95"].message == (
        "no data after 2 intervals (vs stable: candidate has 3 samples, minSamples is 10: continue); noData=fail"
    )
    assert results["errors"].message.endswith("; noData=pass")
    assert results["acc"].message.endswith("; noData=inconclusive")


@pytest.mark.parametrize(("scenario", "missing"), [("nocandidate", "candidate"), ("nostable", "stable")])
def test_a_side_without_any_series_is_no_data_not_an_error(scraped, scenario, missing):
    checks = (
        sequential("p95", "latency_p95", "10%", noData="fail"),
        sequential("errors", "error_rate", "1%", noData="pass"),
    )
    early = by_name(analyse(spec(*checks), local_context(scenario, looks=1), scraped.provider))
    assert early["p95"].verdict == early["errors"].verdict == "inconclusive"
    assert early["p95"].message == f"{missing} has no latency buckets yet (interval 1/3)"
    assert early["errors"].message == f"difference: {missing} has 0 samples, minSamples is 10: continue (interval 1/3)"
    assert early["p95"].candidate is None and early["p95"].baseline is None

    late = by_name(analyse(spec(*checks), local_context(scenario, looks=3), scraped.provider))
    assert (late["p95"].verdict, late["errors"].verdict) == ("fail", "pass")
    assert late["p95"].message == f"no data after 3 intervals ({missing} has no latency buckets yet); noData=fail"


def test_the_judge_weighs_the_whole_step_not_the_last_window(scraped):
    # A window shorter than a scrape interval holds one sample per series: increase() over it has
    # nothing, so a threshold check sees no data, while the sequential judge reads the whole step.
    ctx = AnalysisContext(rollout("worse"), "default", MODEL, STABLE, CANDIDATE, "canary", 0.5, analysed_seconds=STEP)
    checks = spec(sequential("p95", "latency_p95", "10%"), {"name": "p95-max", "template": "latency_p95", "max": 0.05})
    results = by_name(analyse(checks, ctx, scraped.provider))
    assert results["p95"].verdict == "fail" and results["p95"].samples == 200
    assert results["p95-max"].verdict == "inconclusive"
    assert results["p95-max"].message == "no data (candidate has 0 samples, minSamples is 10); noData=inconclusive"


# ---------------------------------------------------------------------------------------------
# knative: millisecond buckets, judged and reported in seconds


def test_knative_latency_in_milliseconds_is_judged_in_seconds(scraped):
    ctx = knative_context(SLOW_REV)
    checks = spec(sequential("p95", "latency_p95", "10%"), sequential("errors", "error_rate", "1%"), provider="knative-legacy")
    results = by_name(analyse(checks, ctx, scraped.provider))

    p95 = results["p95"]
    assert p95.verdict == "fail", p95.message
    # 20-60 ms against 60-180 ms: the values are seconds, as the threshold template's `/ 1000` gives.
    assert p95.candidate == pytest.approx(prometheus_value(scraped.provider, KNATIVE_LEGACY["latency_p95"], ctx, CANDIDATE, "canary"))
    assert p95.baseline == pytest.approx(prometheus_value(scraped.provider, KNATIVE_LEGACY["latency_p95"], ctx, STABLE, "stable"))
    assert 0.06 < p95.candidate < 0.2 and 0.02 < p95.baseline < 0.06
    assert f"p95 {p95.candidate:.3g} s vs stable {p95.baseline:.3g} s (200 vs 200 requests)" in p95.message
    assert "above 0.2 s vs stable" in p95.message  # the tail's bound: le="200" ms, in seconds

    # 40 of 200 answered 5xx; the stable never did and has no 5xx series: 0 errors, not no data.
    errors = results["errors"]
    assert errors.verdict == "fail", errors.message
    assert (errors.candidate, errors.baseline, errors.samples) == (pytest.approx(0.2), 0.0, 200)


def test_knative_identical_revisions_pass(scraped):
    checks = spec(sequential("p95", "latency_p95", "20%"), provider="knative-legacy")
    [result] = analyse(checks, knative_context(SAME_REV), scraped.provider)
    assert result.verdict == "pass", result.message
    assert result.candidate == pytest.approx(result.baseline) and 0.02 < result.baseline < 0.06


def test_knative_accuracy_is_judged_in_the_shadow_only(scraped):
    # The comparator's accuracy has no canary series on KServe: analyse skips it in a canary step.
    checks = spec(sequential("p95", "latency_p95", "20%"), sequential("acc", "accuracy", "2%"), provider="knative-legacy")
    assert [r.name for r in analyse(checks, knative_context(SAME_REV), scraped.provider)] == ["p95"]


# ---------------------------------------------------------------------------------------------
# errors: a verdict naming the cause, never a pass


def test_buckets_that_do_not_match_are_an_error(scraped):
    ctx = AnalysisContext(
        "iris", NAMESPACE, MODEL, STABLE, CANDIDATE, "canary", STEP,
        platform={STABLE: {"workload": STABLE_WL}, CANDIDATE: {"workload": ODD_WL}}, analysed_seconds=STEP,
    )  # fmt: skip
    checks = spec(sequential("p95", "latency_p95", "10%"), provider="istio")
    [result] = analyse(checks, ctx, scraped.provider)
    assert result.verdict == "error"
    assert result.message.startswith("cannot judge p95: histograms have different buckets (3 bounds 0.05..0.25 vs 4 bounds 0.05..0.5)")


def test_a_query_that_cannot_be_rendered_is_an_error(scraped):
    # Knative's templates select by revision: without the platform's names the query is broken.
    checks = spec(sequential("p95", "latency_p95", "10%"), provider="knative-legacy")
    result = evaluate(checks, checks.analysis.metrics[0], knative_context(SAME_REV, platform=False), scraped.provider)
    assert result.verdict == "error"
    assert "no value for variable 'revision'" in result.message
    assert result.threshold == "sequential: at most 10% slower than stable at 95% confidence"


def test_unreachable_prometheus_is_an_error_for_every_sequential_check():
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusProvider(url, timeout=1) as provider:
        results = analyse(spec(*CLEAR_CHECKS), local_context("worse"), provider)
    assert [r.verdict for r in results] == ["error", "error", "error"]
    assert all(r.message.startswith(f"cannot connect to Prometheus at {url}") for r in results)
