"""Builtin metric templates, grouped by `analysis.provider`.

A template is a PromQL query with `{{ variables }}`. The analysis renders it twice per check:
once for the candidate (`version` = candidate, `role` = shadow or canary) and once for the
baseline (`version` = stable, `role` = stable), so one query serves both absolute thresholds and
comparisons against the baseline. `samples` counts the observations behind a value in the same
window; `minSamples` and `noData` are judged on it.

The `local` provider reads the metrics exported by the local router
(`controller/local/router.py`). On KServe, `knative` reads Knative's queue-proxy series and
`istio` the mesh's, per version through the `revision` / `workload` variables the KServe platform
fills in; both take agreement and accuracy from the shadow comparator (`canary/shadow.py`), which
exports the router's series names. Queue-proxy and Istio latencies are in milliseconds: the
templates divide by 1000 so every provider speaks seconds.

A limit of Prometheus itself: a series that first appears inside a window (say the first 503 a
workload ever answers) loses its first increment to rate()/increase(), so an error class that is
brand new reads low for one window. The local router creates its series at 0 to avoid this; Knative
and Istio do not, which is one more reason to keep `failureLimit`/`consecutive` at their defaults
for error checks rather than loosen them.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Template:
    query: str
    description: str
    samples: str | None = None
    # False when a baseline value has no meaning (agreement *with* the baseline).
    has_baseline: bool = True
    # Phases where the signal exists: agreement needs mirrored traffic, so only the shadow.
    phases: tuple[str, ...] = (SHADOW, CANARY)


_LOCAL_SEL = 'rollout="{{ rollout }}",version="{{ version }}",role="{{ role }}"'
_LOCAL_REQUESTS = f"sum(increase(modelrollout_requests_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))"


def _latency(quantile: float) -> Template:
    return Template(
        query=(
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(modelrollout_request_duration_seconds_bucket{{{_LOCAL_SEL}}}[{{{{ interval }}}}])))"
        ),
        description=f"p{round(quantile * 100)} latency in seconds of requests answered by the version",
        samples=_LOCAL_REQUESTS,
    )


LOCAL = {
    "latency_p50": _latency(0.5),
    "latency_p95": _latency(0.95),
    "latency_p99": _latency(0.99),
    "error_rate": Template(
        query=(
            f"sum(rate(modelrollout_request_errors_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}])) / "
            f"sum(rate(modelrollout_requests_total{{{_LOCAL_SEL}}}[{{{{ interval }}}}]))"
        ),
        description="share of requests to the version that failed (5xx, timeout, connection error)",
        samples=_LOCAL_REQUESTS,
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
    ),
}

# The comparator's series (same names as the router's): agreement needs mirrored traffic; its
# accuracy covers stable and shadow only, since the logger cannot tell canary revisions apart.
_COMPARATOR = {
    "shadow_agreement": LOCAL["shadow_agreement"],
    "accuracy": Template(
        query=LOCAL["accuracy"].query,
        description=LOCAL["accuracy"].description + " (stable and shadow, from the comparator)",
        samples=LOCAL["accuracy"].samples,
        phases=(SHADOW,),
    ),
}


def _histogram_ms(metric: str, selector: str, quantile: float, description: str, samples: str) -> Template:
    return Template(
        query=f"histogram_quantile({quantile}, sum by (le) (rate({metric}{{{selector}}}[{{{{ interval }}}}]))) / 1000",
        description=description,
        samples=samples,
    )


def _error_rate(total: str, errors: str, description: str) -> Template:
    # `or vector(0)`: a version that never failed has no 5xx series at all, which is 0, not "no data".
    return Template(
        query=f"(sum(rate({errors}[{{{{ interval }}}}])) or vector(0)) / sum(rate({total}[{{{{ interval }}}}]))",
        description=description,
        samples=f"sum(increase({total}[{{{{ interval }}}}]))",
    )


_KN_SEL = 'namespace_name="{{ namespace }}",revision_name="{{ revision }}"'
_KN_COUNT = f"revision_app_request_count{{{_KN_SEL}}}"
_KN_SAMPLES = f"sum(increase({_KN_COUNT}[{{{{ interval }}}}]))"
KNATIVE = {
    **{
        f"latency_p{round(q * 100)}": _histogram_ms(
            "revision_app_request_latencies_bucket", _KN_SEL, q,
            f"p{round(q * 100)} latency in seconds at the revision's queue-proxy", _KN_SAMPLES,
        )
        for q in (0.5, 0.95, 0.99)
    },
    "error_rate": _error_rate(
        _KN_COUNT,
        f'revision_app_request_count{{{_KN_SEL},response_code_class="5xx"}}',
        "share of the revision's requests answered 5xx (queue-proxy)",
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
        )
        for q in (0.5, 0.95, 0.99)
    },
    "error_rate": _error_rate(
        _ISTIO_COUNT,
        f'istio_requests_total{{{_ISTIO_SEL},response_code=~"5.."}}',
        "share of the workload's requests answered 5xx (Istio)",
    ),
    **_COMPARATOR,
}  # fmt: skip

PROVIDERS: dict[str, dict[str, Template]] = {"local": LOCAL, "knative": KNATIVE, "istio": ISTIO}


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
