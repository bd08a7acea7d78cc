"""Builtin metric templates, grouped by `analysis.provider`.

A template is a PromQL query with `{{ variables }}`. The analysis renders it twice per check:
once for the candidate (`version` = candidate, `role` = shadow or canary) and once for the
baseline (`version` = stable, `role` = stable), so one query serves both absolute thresholds and
comparisons against the baseline. `samples` counts the observations behind a value in the same
window; `minSamples` and `noData` are judged on it.

The `local` provider reads the metrics exported by the local router
(`canary/traffic/router.py`). In the shadow phase its latency and error templates compare the
shadow with the stable's *baseline* server (role `baseline`, `Template.shadow_baseline`), which
receives the same copies at the same moment: the stable's client requests are timed on another
path, and an identical shadow measured against them looked slower (issue 11). On KServe, `knative` reads Knative's queue-proxy series and
`istio` the mesh's, per version through the `revision` / `workload` variables the KServe platform
fills in; both take the quality signals (agreement, accuracy, calibration, label lag, drift) from
the shadow comparator (`canary/traffic/comparator.py`), which exports the router's series names. Every
provider speaks seconds: Knative >= 1.19's queue-proxy histogram is in seconds already; the
`knative-legacy` (Knative < 1.19) and `istio` latencies are in milliseconds, and their templates
divide by 1000.

Quality templates (canary/traffic/serving_metrics.py says what each series counts):
- `brier_score`, `calibration_error` (ECE over 10 confidence bins): labelled probability
  predictions only; no data for a model that returns labels.
- `label_lag_p50`/`label_lag_p95`: seconds from a request to its labels; `late_labels` (count)
  and `late_label_rate` (share of arriving labels): labels that came after the predictions were
  dropped (feedback TTL or entry limit), which accuracy never sees.
- `prediction_psi` (classes) and `prediction_ks` (regression values, binned): drift of the
  candidate's predictions from the stable's in the same window. One query compares both
  versions, so they have no baseline value of their own (`has_baseline=False`): judge them with
  `max`. PSI over *value buckets* and the p-values need per-bucket counts of both sides: see
  DISTRIBUTIONS and tests/reference/drift.py (the reference they are tested against).
- `shadow_relative_error_p50`/`_p95`: for regression, how far the shadow's values are from the
  stable's (``|a - b| / max(|a|, |b|)``; an unanswered instance counts 2).

Latency, error-rate and accuracy templates also carry `judge` (JudgeQueries): the raw counts
behind their value (histogram buckets, events and trials), which `judge: sequential` checks read
over the whole step instead of the value over one window (canary/decision/sequential_check.py).

A limit of Prometheus itself: a series that first appears inside a window (say the first 503 a
workload ever answers) loses its first increment to rate()/increase(), so an error class that is
brand new reads low for one window. The local router creates its series at 0 to avoid this; Knative
and Istio do not, which is one more reason to keep `failureLimit`/`consecutive` at their defaults
for error checks rather than loosen them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Every variable a query may use. Unknown ones are rejected when the spec is loaded.
TEMPLATE_VARIABLES = (
    "rollout",
    "model",
    "namespace",
    "stable_version",
    "candidate_version",
    "version",
    "role",
    "interval",
    # Per version, from the platform (KServe): what serves that version.
    "inference_service",
    "revision",
    "workload",
)
# Variables only a platform that runs versions as Kubernetes workloads can fill in.
PLATFORM_VARIABLES = ("inference_service", "revision", "workload")

SHADOW = "shadow"
CANARY = "canary"
# The roles a baseline is measured under (canary/traffic/serving_metrics.py exports the same names).
STABLE = "stable"
BASELINE = "baseline"


@dataclass(frozen=True)
class JudgeQueries:
    """What the sequential judge (canary/decision/sequential.py) reads per version: the raw counts behind a
    template's value, over the step so far (`{{ interval }}` is then the time since the step's
    analysis began, not one interval).

    - kind "latency": `buckets` is a histogram's cumulative counts `sum by (le)`; its `le` bounds
      times `bucket_scale` are seconds (0.001 for `knative-legacy` and `istio`, which count
      milliseconds); `quantile` is the tail the judge watches besides the rank test (the
      template's p95 watches the slowest 5%).
    - kind "rate": `events` out of `trials` (errors of requests, correct of labelled), each one
      number; `worse` says which direction is a regression.
    """

    kind: Literal["latency", "rate"]
    buckets: str = ""
    bucket_scale: float = 1.0
    quantile: float = 0.95
    events: str = ""
    trials: str = ""
    worse: Literal["higher", "lower"] = "higher"


@dataclass(frozen=True)
class Template:
    query: str
    description: str
    samples: str | None = None
    # False when a baseline value has no meaning (agreement *with* the baseline).
    has_baseline: bool = True
    # In the shadow phase, the baseline side is rendered with role "baseline" instead of "stable":
    # the stable's second server that the router sends every copy the shadow gets, timed by the
    # same mirror worker (canary/traffic/mirror.py). For signals measured on the request path (latency,
    # errors), where the stable's client path is not like the shadow's copy path.
    shadow_baseline: bool = False
    # Phases where the signal exists: agreement needs mirrored traffic, so only the shadow.
    phases: tuple[str, ...] = (SHADOW, CANARY)
    # The counts the sequential judge needs; None: the template supports only `judge: threshold`.
    judge: JudgeQueries | None = None
    # Metric names the serving platform exports (queue-proxy, sidecar) that the query reads: when
    # Prometheus has none of them at all, no window will ever have data (the operator says so in the
    # status before any analysis). Empty for series this project exports itself.
    series: tuple[str, ...] = ()


_LOCAL_SEL = 'rollout="{{ rollout }}",version="{{ version }}",role="{{ role }}"'
_LOCAL_REQUESTS = f"sum(increase(modelrollout_requests_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))"


def _latency(quantile: float) -> Template:
    return Template(
        shadow_baseline=True,
        query=(
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(modelrollout_request_duration_seconds_bucket{{{_LOCAL_SEL}}}[{{{{ interval }}}}])))"
        ),
        description=f"p{round(quantile * 100)} latency in seconds of requests answered by the version",
        samples=_LOCAL_REQUESTS,
        judge=JudgeQueries(
            kind="latency",
            buckets=f"sum by (le) (increase(modelrollout_request_duration_seconds_bucket{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))",
            quantile=quantile,
        ),
    )


LOCAL = {
    "latency_p50": _latency(0.5),
    "latency_p95": _latency(0.95),
    "latency_p99": _latency(0.99),
    "error_rate": Template(
        shadow_baseline=True,
        query=(
            f"sum(rate(modelrollout_request_errors_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}])) / "
            f"sum(rate(modelrollout_requests_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))"
        ),
        description="share of requests to the version that failed (5xx, timeout, connection error)",
        samples=_LOCAL_REQUESTS,
        judge=JudgeQueries(
            kind="rate",
            events=f"sum(increase(modelrollout_request_errors_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))",
            trials=_LOCAL_REQUESTS,
        ),
    ),
    "shadow_agreement": Template(
        query=(
            'sum(increase(modelrollout_shadow_agreements_total{rollout="{{ rollout }}",version="{{ version }}"}'
            "[{{ interval }}])) / "
            'sum(increase(modelrollout_shadow_comparisons_total{rollout="{{ rollout }}",version="{{ version }}"}'
            "[{{ interval }}]))"
        ),
        description="share of mirrored requests where the shadow's prediction matched the stable's",
        samples=(
            'sum(increase(modelrollout_shadow_comparisons_total{rollout="{{ rollout }}",version="{{ version }}"}'
            "[{{ interval }}]))"
        ),
        has_baseline=False,
        phases=(SHADOW,),
    ),
    "accuracy": Template(
        query=(
            f"sum(increase(modelrollout_feedback_correct_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}])) / "
            f"sum(increase(modelrollout_feedback_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))"
        ),
        description="share of predictions matching ground-truth labels sent to POST /feedback",
        samples=f"sum(increase(modelrollout_feedback_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))",
        judge=JudgeQueries(
            kind="rate",
            events=f"sum(increase(modelrollout_feedback_correct_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))",
            trials=f"sum(increase(modelrollout_feedback_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))",
            worse="lower",
        ),
    ),
}

# --- quality signals: calibration, label lag, drift ----------------------------------------------

# The stable's side of a comparison rendered for the candidate (drift compares both in one query).
_BASELINE_SEL = 'rollout="{{ rollout }}",version="{{ stable_version }}",role="stable"'
# The floor on proportions in PSI (the reference, tests/reference/drift.py, uses the same): an empty
# class is not infinite drift.
_PSI_EPSILON = "0.0001"


def _increase(metric: str, selector: str = _LOCAL_SEL) -> str:
    return f"increase({metric}{{{selector}}}[{{{{ interval }}}}])"


def _sum_increase(metric: str, selector: str = _LOCAL_SEL) -> str:
    return f"sum({_increase(metric, selector)})"


def _label_lag(quantile: float) -> Template:
    return Template(
        query=(
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(modelrollout_feedback_label_lag_seconds_bucket{{{_LOCAL_SEL}}}[{{{{ interval }}}}])))"
        ),
        description=(
            f"p{round(quantile * 100)} of the seconds between a request and its ground-truth labels "
            "(late labels included; above 86400 s reads 86400)"
        ),
        samples=_sum_increase("modelrollout_feedback_label_lag_seconds_count"),
    )


def _class_shares(selector: str) -> str:
    counts = f"sum by (class) ({_increase('modelrollout_predictions_total', selector)})"
    return f"clamp_min({counts} / scalar(sum({counts})), {_PSI_EPSILON})"


def _value_cdf(selector: str) -> str:
    buckets = f"sum by (le) ({_increase('modelrollout_prediction_value_bucket', selector)})"
    return f"{buckets} / scalar({_sum_increase('modelrollout_prediction_value_count', selector)})"


def _relative_error(quantile: float) -> Template:
    selector = 'rollout="{{ rollout }}",version="{{ version }}"'
    return Template(
        query=(
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(modelrollout_shadow_relative_error_bucket{{{selector}}}[{{{{ interval }}}}])))"
        ),
        description=(
            f"p{round(quantile * 100)} relative difference |shadow - stable| / max(|shadow|, |stable|) of "
            "mirrored regression predictions (2 for an instance the shadow did not answer)"
        ),
        samples=_sum_increase("modelrollout_shadow_relative_error_count", selector),
        has_baseline=False,
        phases=(SHADOW,),
    )


_LATE = _sum_increase("modelrollout_feedback_late_labels_total")
_ARRIVED = f"({_sum_increase('modelrollout_feedback_total')} + {_LATE})"

QUALITY = {
    "brier_score": Template(
        query=(
            f"{_sum_increase('modelrollout_feedback_brier_score_sum')} / "
            f"{_sum_increase('modelrollout_feedback_brier_score_count')}"
        ),
        description=(
            "mean multi-class Brier score of labelled probability predictions: sum of squared "
            "differences between the probabilities and the one-hot label (0 best, 2 worst)"
        ),
        samples=_sum_increase("modelrollout_feedback_brier_score_count"),
    ),
    "calibration_error": Template(
        query=(
            "sum(abs("
            f"sum by (bin) ({_increase('modelrollout_feedback_calibration_correct_total')}) - "
            f"sum by (bin) ({_increase('modelrollout_feedback_calibration_confidence_total')})"
            f")) / {_sum_increase('modelrollout_feedback_calibration_total')}"
        ),
        description=(
            "expected calibration error of labelled probability predictions: the gap between "
            "confidence and accuracy over 10 confidence bins, weighted by count (0 is perfect)"
        ),
        samples=_sum_increase("modelrollout_feedback_calibration_total"),
    ),
    "label_lag_p50": _label_lag(0.5),
    "label_lag_p95": _label_lag(0.95),
    "late_labels": Template(
        query=_LATE,
        description="labels that arrived after their predictions were dropped (feedback TTL or entry limit)",
        samples=_ARRIVED,
    ),
    "late_label_rate": Template(
        query=f"{_LATE} / {_ARRIVED}",
        description="share of arriving labels that came too late to be scored",
        samples=_ARRIVED,
    ),
    "prediction_psi": Template(
        query=(
            f"sum(({_class_shares(_LOCAL_SEL)} - {_class_shares(_BASELINE_SEL)}) * "
            f"ln({_class_shares(_LOCAL_SEL)} / {_class_shares(_BASELINE_SEL)}))"
        ),
        description=(
            "population stability index between the candidate's and the stable's predicted classes "
            "in the window (< 0.1 no shift, > 0.25 large)"
        ),
        samples=_sum_increase("modelrollout_predictions_total"),
        has_baseline=False,
    ),
    "prediction_ks": Template(
        query=f"max(abs({_value_cdf(_LOCAL_SEL)} - {_value_cdf(_BASELINE_SEL)}))",
        description=(
            "Kolmogorov-Smirnov distance between the candidate's and the stable's regression "
            "predictions in the window, on the value histogram's buckets (0 same, 1 disjoint)"
        ),
        samples=_sum_increase("modelrollout_prediction_value_count"),
        has_baseline=False,
    ),
    "shadow_relative_error_p50": _relative_error(0.5),
    "shadow_relative_error_p95": _relative_error(0.95),
}
LOCAL.update(QUALITY)


@dataclass(frozen=True)
class DistributionQuery:
    """A per-version distribution for drift statistics (tests/reference/drift.py computes them in Python).

    Render `query` like a template, once for the candidate and once for the stable (role
    `stable`); it returns an instant vector with one series per value of the label `by`. Pass
    ``{series["metric"][by]: float(series["value"][1])}`` of each side to `compare` (named
    function of tests/reference/drift.py): ``class_psi`` / ``class_chi_square`` for classes, and for values
    ``drift.Binned.from_le`` on each side, then ``binned_psi`` / ``ks_test``.
    """

    query: str
    by: str
    description: str
    compare: tuple[str, ...]
    phases: tuple[str, ...] = (SHADOW, CANARY)


DISTRIBUTIONS = {
    "prediction_classes": DistributionQuery(
        query=f"sum by (class) ({_increase('modelrollout_predictions_total')})",
        by="class",
        description="predicted instances per class in the window",
        compare=("class_psi", "class_chi_square"),
    ),
    "prediction_values": DistributionQuery(
        query=f"sum by (le) ({_increase('modelrollout_prediction_value_bucket')})",
        by="le",
        description="regression predictions in the window, cumulative per histogram bucket",
        compare=("binned_psi", "ks_test"),
    ),
}


# The comparator's series (same names as the router's): agreement needs mirrored traffic; its
# accuracy covers stable and shadow only, since the logger cannot tell canary revisions apart.
# The same holds for every quality signal: on KServe they exist in the shadow phase.
def _shadow_only(template: Template, note: str = " (stable and shadow, from the comparator)") -> Template:
    return Template(
        query=template.query,
        description=template.description + note,
        samples=template.samples,
        has_baseline=template.has_baseline,
        phases=(SHADOW,),
        judge=template.judge,
    )


_COMPARATOR = {
    "shadow_agreement": LOCAL["shadow_agreement"],
    "accuracy": _shadow_only(LOCAL["accuracy"]),
    **{name: _shadow_only(template) for name, template in QUALITY.items()},
}


def _histogram_ms(
    metric: str, selector: str, quantile: float, description: str, samples: str, series: tuple[str, ...]
) -> Template:
    return Template(
        query=f"histogram_quantile({quantile}, sum by (le) (rate({metric}{{{selector}}}[{{{{ interval }}}}]))) / 1000",
        description=description,
        samples=samples,
        judge=JudgeQueries(
            kind="latency",
            buckets=f"sum by (le) (increase({metric}{{{selector}}}[{{{{ interval }}}}]))",
            bucket_scale=0.001,
            quantile=quantile,
        ),
        series=series,
    )


def _error_rate(total: str, errors: str, description: str, series: tuple[str, ...]) -> Template:
    # `or vector(0)`: a version that never failed has no 5xx series at all, which is 0, not "no data".
    return Template(
        query=f"(sum(rate({errors}[{{{{ interval }}}}])) or vector(0)) / sum(rate({total}[{{{{ interval }}}}]))",
        description=description,
        samples=f"sum(increase({total}[{{{{ interval }}}}]))",
        judge=JudgeQueries(
            kind="rate",
            events=f"sum(increase({errors}[{{{{ interval }}}}]))",
            trials=f"sum(increase({total}[{{{{ interval }}}}]))",
        ),
        series=series,
    )


# --- Knative >= 1.19: the queue-proxy's OpenTelemetry histogram ---------------------------------
# knative/serving pkg/queue/request_metric.go at knative-v1.21.0: `kn.serving.invocation.duration`,
# unit s, its only attribute `http.response.status_code`; knative/pkg's Prometheus exporter
# (UnderscoreEscapingWithSuffixes) names it `kn_serving_invocation_duration_seconds_bucket/_sum/_count`
# with `http_response_status_code`. The revision is a *resource* attribute: the exporter writes it on
# `target_info{kn_revision_name, k8s_namespace_name, ...}` (one per scraped pod), not on the series.
# So one revision's series are the pods' series joined on the scrape target (`job`, `instance`) with
# that revision's `target_info` -- or, where a collector copied the resource attributes onto every
# series (OpenTelemetry Collector's resource_to_telemetry_conversion), the series' own labels.
# Exact names from knative-v1.19.8/1.20.1; latency below one second is right from 1.19.9/1.20.2/1.21.0
# (earlier releases truncated it to whole seconds): README, "Support matrix".
KN_DURATION = "kn_serving_invocation_duration_seconds"
_KN_REVISION = 'k8s_namespace_name="{{ namespace }}",kn_revision_name="{{ revision }}"'


def _kn_revision(function: str, series: str, matchers: str = "") -> str:
    """`function(series[interval])` for one revision's queue-proxies: the series' own revision label,
    or else a join with the `target_info` of the pods that export them (see above)."""
    own = f"{series}{{{_KN_REVISION}{',' + matchers if matchers else ''}}}"
    any_pod = f"{series}{{{matchers}}}" if matchers else series
    info = f"target_info{{{_KN_REVISION}}}"
    return (
        f"({function}({own}[{{{{ interval }}}}]) or "
        f"({function}({any_pod}[{{{{ interval }}}}]) * on(job, instance) group_left() {info}))"
    )


_KN_ERRORS = 'http_response_status_code=~"5.."'
_KN_SAMPLES = f"sum({_kn_revision('increase', KN_DURATION + '_count')})"


def _kn_latency(quantile: float) -> Template:
    return Template(
        query=f"histogram_quantile({quantile}, sum by (le) ({_kn_revision('rate', KN_DURATION + '_bucket')}))",
        description=f"p{round(quantile * 100)} latency in seconds at the revision's queue-proxies (Knative >= 1.19)",
        samples=_KN_SAMPLES,
        judge=JudgeQueries(
            kind="latency", buckets=f"sum by (le) ({_kn_revision('increase', KN_DURATION + '_bucket')})", quantile=quantile
        ),
        # (target_info is not required: a collector may have copied the revision onto the series)
        series=(f"{KN_DURATION}_bucket", f"{KN_DURATION}_count"),
    )


KNATIVE = {
    **{f"latency_p{round(q * 100)}": _kn_latency(q) for q in (0.5, 0.95, 0.99)},
    "error_rate": Template(
        # `or vector(0)`: a revision that never failed has no 5xx series at all, which is 0, not "no data".
        query=(
            f"(sum({_kn_revision('rate', KN_DURATION + '_count', _KN_ERRORS)}) or vector(0)) / "
            f"sum({_kn_revision('rate', KN_DURATION + '_count')})"
        ),
        description="share of the revision's requests answered 5xx at its queue-proxies (Knative >= 1.19)",
        samples=_KN_SAMPLES,
        judge=JudgeQueries(
            kind="rate",
            events=f"sum({_kn_revision('increase', KN_DURATION + '_count', _KN_ERRORS)})",
            trials=_KN_SAMPLES,
        ),
        series=(f"{KN_DURATION}_count",),
    ),
    **_COMPARATOR,
}

# --- Knative <= 1.18: the queue-proxy's OpenCensus series ------------------------------------------
# knative/serving pkg/queue/request_metric.go at knative-v1.18.0: `revision_app_request_count` and
# `revision_app_request_latencies` (milliseconds), the revision a label on every series.
_KN_LEGACY_SEL = 'namespace_name="{{ namespace }}",revision_name="{{ revision }}"'
_KN_LEGACY_COUNT = f"revision_app_request_count{{{_KN_LEGACY_SEL}}}"
_KN_LEGACY_SAMPLES = f"sum(increase({_KN_LEGACY_COUNT}[{{{{ interval }}}}]))"
KNATIVE_LEGACY = {
    **{
        f"latency_p{round(q * 100)}": _histogram_ms(
            "revision_app_request_latencies_bucket", _KN_LEGACY_SEL, q,
            f"p{round(q * 100)} latency in seconds at the revision's queue-proxy (Knative <= 1.18)", _KN_LEGACY_SAMPLES,
            series=("revision_app_request_latencies_bucket", "revision_app_request_count"),
        )
        for q in (0.5, 0.95, 0.99)
    },
    "error_rate": _error_rate(
        _KN_LEGACY_COUNT,
        f'revision_app_request_count{{{_KN_LEGACY_SEL},response_code_class="5xx"}}',
        "share of the revision's requests answered 5xx (queue-proxy, Knative <= 1.18)",
        series=("revision_app_request_count",),
    ),
    **_COMPARATOR,
}  # fmt: skip

_ISTIO_SEL = (
    'reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ workload }}"'
)
_ISTIO_COUNT = f"istio_requests_total{{{_ISTIO_SEL}}}"
ISTIO = {
    **{
        f"latency_p{round(q * 100)}": _histogram_ms(
            "istio_request_duration_milliseconds_bucket", _ISTIO_SEL, q,
            f"p{round(q * 100)} latency in seconds seen by the workload's sidecar",
            f"sum(increase({_ISTIO_COUNT}[{{{{ interval }}}}]))",
            series=("istio_request_duration_milliseconds_bucket", "istio_requests_total"),
        )
        for q in (0.5, 0.95, 0.99)
    },
    "error_rate": _error_rate(
        _ISTIO_COUNT,
        f'istio_requests_total{{{_ISTIO_SEL},response_code=~"5.."}}',
        "share of the workload's requests answered 5xx (Istio)",
        series=("istio_requests_total",),
    ),
    **_COMPARATOR,
}  # fmt: skip

PROVIDERS: dict[str, dict[str, Template]] = {
    "local": LOCAL,
    "knative": KNATIVE,
    "knative-legacy": KNATIVE_LEGACY,
    "istio": ISTIO,
}


def lookup(provider: str, name: str) -> Template:
    """The template, or a KeyError whose message lists what exists."""
    templates = PROVIDERS.get(provider)
    if templates is None:
        raise KeyError(f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}")
    if name not in templates:
        raise KeyError(
            f"unknown template {name!r} for provider {provider!r}; known: {', '.join(sorted(templates))}"
        )
    return templates[name]
