"""Builtin metric templates, grouped by `analysis.provider`.

A template is a PromQL query with `{{ variables }}`. The analysis renders it twice per check:
once for the candidate (`version` = candidate, `role` = shadow or canary) and once for the
baseline (`version` = stable, `role` = stable), so one query serves both absolute thresholds and
comparisons against the baseline. `samples` counts the observations behind a value in the same
window; `minSamples` and `noData` are judged on it.

The `local` provider reads the metrics exported by the local router
(`controller/local/router.py`); the next platforms add their own sets here.
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
)

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

PROVIDERS: dict[str, dict[str, Template]] = {"local": LOCAL}


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
