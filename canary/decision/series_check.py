"""Do the platform series a rollout's checks read exist in Prometheus at all?

A check over series that Prometheus has never seen is "no data" in every window, and the rollout
would wait out its `progressDeadline` before rolling back on it. The usual causes are a provider
that does not match the cluster (Knative 1.21 exports `kn_serving_invocation_duration_seconds_*`,
not Knative 1.18's `revision_app_request_*`) or a scrape nobody configured (Knative's queue-proxy
exports nothing unless `request-metrics-protocol: prometheus`, and neither Knative nor KServe
ships a PodMonitor). `missing_series` names which provider, which series it looked for and which
similar ones Prometheus does have, from the metric names Prometheus knows
(`/api/v1/label/__name__/values`); the operator puts that in the rollout's status before any
analysis runs. Pure: the caller fetches the names.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

from canary.decision.spec import ModelRolloutSpec

# Metric-name prefixes of the serving stacks we know, and what to do when a cluster exports those.
KNOWN_STACKS: tuple[tuple[str, str], ...] = (
    ("kn_serving_invocation_duration_seconds", "Knative >= 1.19 queue-proxy: use provider 'knative'"),
    (
        "kn_queueproxy_app_duration_seconds",
        "Knative 1.19.0-1.19.7 / 1.20.0 queue-proxy, which records latency in whole seconds: upgrade Knative "
        "to 1.19.9, 1.20.2 or >= 1.21 (then provider 'knative')",
    ),
    ("revision_app_request_", "Knative <= 1.18 queue-proxy (OpenCensus): use provider 'knative-legacy'"),
    ("istio_request", "Istio sidecars: use provider 'istio'"),
)
# Where each provider's series come from, said in the message so the fix is findable.
SOURCES = {
    "knative": (
        "Knative >= 1.19 queue-proxies on :9091 (config-observability request-metrics-protocol: prometheus, "
        "and a scrape of the revisions' pods)"
    ),
    "knative-legacy": "Knative <= 1.18 queue-proxies on :9091 (a scrape of the revisions' pods)",
    "istio": "Istio sidecars in the model pods (a scrape of their :15020/stats/prometheus)",
}
_MAX_SIMILAR = 5


def wanted_series(spec: ModelRolloutSpec) -> tuple[str, ...]:
    """The platform series the spec's checks read, in order, without repeats."""
    names: dict[str, None] = {}
    for check in spec.analysis.metrics:
        if check.template is None:
            continue  # own PromQL: we cannot know its series
        for name in spec.analysis.template_for(check).series:
            names[name] = None
    return tuple(names)


def missing_series(spec: ModelRolloutSpec, known: Collection[str]) -> str | None:
    """A one-line problem when Prometheus (whose metric names are `known`) has none of some series
    the checks need; None when all are there or the checks need none."""
    wanted = wanted_series(spec)
    absent = [name for name in wanted if name not in known]
    if not absent:
        return None
    provider = spec.analysis.provider
    source = SOURCES.get(provider)
    message = (
        f"provider {provider!r} reads {', '.join(wanted)}"
        + (f" from {source}" if source else "")
        + f"; Prometheus has no series named {', '.join(absent)}"
    )
    similar = similar_series(absent, known)
    if similar:
        message += f"; similar series it has: {', '.join(similar)}"
        advice = [text for prefix, text in KNOWN_STACKS if any(name.startswith(prefix) for name in similar)]
        if advice:
            message += f" ({'; '.join(dict.fromkeys(advice))})"
    return message


def similar_series(absent: Collection[str], known: Collection[str]) -> list[str]:
    """Names in `known` from another known stack, then the closest spellings of what is absent."""
    found: dict[str, None] = {}
    for prefix, _ in KNOWN_STACKS:
        if any(name.startswith(prefix) for name in absent):
            continue  # the stack we looked for
        for name in sorted(known):
            if name.startswith(prefix) and not name.endswith(("_sum", "_created")):
                found[name] = None
    for name in absent:
        for close in difflib.get_close_matches(name, list(known), n=3, cutoff=0.75):
            found[close] = None
    return list(found)[:_MAX_SIMILAR]
