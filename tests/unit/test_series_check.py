"""Whether a provider's series exist at all: the message, the catalog's caching, the engine's condition."""

from __future__ import annotations

from canary.decision.engine import METRICS_AVAILABLE, CandidateHealth
from canary.decision.metrics import MetricsUnavailable
from canary.decision.series_check import missing_series, wanted_series
from canary.decision.spec import ModelRolloutSpec, Phase
from controller.kube.series_catalog import SeriesCatalog
from tests.unit.test_engine import Driver, make_spec

KNATIVE_1_21 = {"kn_serving_invocation_duration_seconds_bucket", "kn_serving_invocation_duration_seconds_count",
                "kn_serving_invocation_duration_seconds_sum", "target_info", "up"}  # fmt: skip
KNATIVE_1_18 = {"revision_app_request_count", "revision_app_request_latencies_bucket",
                "revision_app_request_latencies_count", "revision_app_request_latencies_sum", "up"}  # fmt: skip


def kserve_spec(provider: str, *metrics: dict) -> ModelRolloutSpec:
    checks = metrics or (
        {"name": "p95", "template": "latency_p95", "max": 0.5},
        {"name": "errors", "template": "error_rate", "max": 0.01},
        {"name": "agree", "template": "shadow_agreement", "min": 0.9},
    )
    return make_spec(target={"inferenceService": "iris"}, analysis={"provider": provider, "metrics": list(checks)})


def test_the_series_a_spec_reads_come_from_its_platform_templates_only():
    assert wanted_series(kserve_spec("knative")) == (
        "kn_serving_invocation_duration_seconds_bucket", "kn_serving_invocation_duration_seconds_count",
    )  # fmt: skip
    assert wanted_series(kserve_spec("istio")) == ("istio_request_duration_milliseconds_bucket", "istio_requests_total")
    # the comparator's series and a hand-written query name nothing to look for
    custom = {"name": "mine", "query": 'sum(rate(my_requests{version="{{ version }}"}[{{ interval }}]))', "max": 3}
    assert wanted_series(kserve_spec("knative", {"name": "a", "template": "shadow_agreement", "min": 0.9}, custom)) == ()
    assert wanted_series(make_spec()) == ()  # local: the router's own series


def test_knative_1_18_series_under_the_knative_provider_name_the_legacy_provider():
    message = missing_series(kserve_spec("knative"), KNATIVE_1_18)
    assert message is not None
    assert message.startswith(
        "provider 'knative' reads kn_serving_invocation_duration_seconds_bucket, kn_serving_invocation_duration_seconds_count "
        "from Knative >= 1.19 queue-proxies on :9091 (config-observability request-metrics-protocol: prometheus"
    )
    assert "Prometheus has no series named kn_serving_invocation_duration_seconds_bucket, kn_serving_invocation_duration_seconds_count" in message
    assert "similar series it has: revision_app_request_count, revision_app_request_latencies_bucket" in message
    assert "use provider 'knative-legacy'" in message


def test_knative_1_21_series_under_the_legacy_provider_name_the_knative_provider():
    message = missing_series(kserve_spec("knative-legacy"), KNATIVE_1_21)
    assert message is not None and "provider 'knative-legacy' reads revision_app_request_latencies_bucket" in message
    assert "similar series it has: kn_serving_invocation_duration_seconds_bucket" in message
    assert "_sum" not in message.split("similar series it has:")[1]
    assert "use provider 'knative'" in message


def test_the_truncating_knative_releases_are_named():
    message = missing_series(kserve_spec("knative"), {"kn_queueproxy_app_duration_seconds_bucket", "kn_queueproxy_app_duration_seconds_count"})
    assert message is not None and "latency in whole seconds: upgrade Knative to 1.19.9, 1.20.2 or >= 1.21" in message


def test_nothing_similar_and_all_present():
    message = missing_series(kserve_spec("istio"), {"up", "node_cpu_seconds_total"})
    assert message is not None and message.endswith("Prometheus has no series named istio_request_duration_milliseconds_bucket, istio_requests_total")
    assert missing_series(kserve_spec("knative"), KNATIVE_1_21) is None
    assert missing_series(kserve_spec("knative-legacy"), KNATIVE_1_18) is None


def test_a_misspelt_name_is_offered():
    names = {"istio_requests_totals", "istio_request_duration_milliseconds_bucket"}
    message = missing_series(kserve_spec("istio"), names)
    assert message is not None and "no series named istio_requests_total;" in message
    assert "istio_requests_totals" in message


class Names:
    def __init__(self, *answers):
        self.answers, self.calls = list(answers), 0

    def __call__(self):
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return sorted(answer)


def test_the_catalog_reads_prometheus_once_per_interval_and_never_calls_unreachable_missing():
    clock = [0.0]
    names = Names(MetricsUnavailable("cannot connect"), KNATIVE_1_18, KNATIVE_1_21)
    catalog = SeriesCatalog(names, max_age_s=30, clock=lambda: clock[0])
    spec = kserve_spec("knative")
    assert catalog.check(spec) == (False, None)  # unreachable: no answer, not "missing"
    checked, problem = catalog.check(spec)
    assert checked and problem is not None and "knative-legacy" in problem
    clock[0] = 29.0
    assert catalog.check(spec)[1] == problem and names.calls == 2  # cached
    clock[0] = 31.0
    assert catalog.check(spec) == (True, None) and names.calls == 3
    assert catalog.check(make_spec()) == (True, None) and names.calls == 3  # nothing to look for: no call


def test_the_engine_says_so_once_and_names_it_at_the_deadline():
    spec = make_spec(canary={"steps": [50], "interval": "20s"}, shadow={"enabled": False}, progressDeadline="1m",
                     target={"inferenceService": "iris"},
                     analysis={"provider": "knative", "metrics": [{"name": "p95", "template": "latency_p95", "max": 0.5}]})  # fmt: skip
    problem = missing_series(spec, KNATIVE_1_18)
    d = Driver(spec)
    d.tick()
    assert d.status.phase is Phase.CANARY
    d.tick(1, candidate=CandidateHealth(ready=True), series_checked=True, series_problem=problem)
    [condition] = [c for c in d.status.conditions if c.type == METRICS_AVAILABLE]
    assert (condition.status, condition.reason, condition.message) == ("False", "SeriesMissing", problem)
    assert d.events() == ["MetricsMissing"]
    d.tick(1, candidate=CandidateHealth(ready=True), series_checked=True, series_problem=problem)
    assert "MetricsMissing" not in d.events()  # not again for the same problem
    d.tick(1, candidate=CandidateHealth(ready=True))  # not checked this tick: the condition stays
    assert next(c for c in d.status.conditions if c.type == METRICS_AVAILABLE).status == "False"
    d.tick(61, candidate=CandidateHealth(ready=True), series_checked=True, series_problem=problem)
    assert d.status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK)
    assert d.status.message.startswith("no progress within progressDeadline (1m)")
    assert d.status.message.endswith(problem)


def test_series_that_appear_clear_the_condition():
    spec = make_spec(target={"inferenceService": "iris"}, shadow={"enabled": False},
                     analysis={"provider": "knative", "metrics": [{"name": "p95", "template": "latency_p95", "max": 0.5}]})  # fmt: skip
    d = Driver(spec)
    d.tick()
    d.tick(1, series_checked=True, series_problem="provider 'knative' reads …")
    d.tick(1, series_checked=True, series_problem=None)
    condition = next(c for c in d.status.conditions if c.type == METRICS_AVAILABLE)
    assert (condition.status, condition.reason) == ("True", "SeriesFound")
    # A rollout whose series were always there never gets the condition at all.
    fresh = Driver(spec)
    fresh.tick()
    fresh.tick(1, series_checked=True, series_problem=None)
    assert all(c.type != METRICS_AVAILABLE for c in fresh.status.conditions)
