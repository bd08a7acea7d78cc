"""The ModelRollout document: what the user asks for (spec) and what the controller records (status).

One model serves every platform: locally it is a YAML file, on Kubernetes it is the CRD that is
generated from these classes. Field names are camelCase on the wire (aliases) and snake_case in
Python. Every model forbids unknown fields, so a typo is an error that names the field instead of
a setting silently ignored.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from canary.decision import templates
from canary.decision.durations import DURATION_PATTERN, parse_duration
from canary.decision.tolerance import DEFAULT_TOLERANCE, Tolerance, ToleranceValue

API_VERSION = "modelrollout.io/v1alpha1"
KIND = "ModelRollout"


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[
    str, AfterValidator(_check_duration), Field(json_schema_extra={"pattern": DURATION_PATTERN})
]


def relative_ratio(value: str | float) -> float:
    """`"10%"` -> 0.1, `0.1` -> 0.1. Raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a percentage such as '10%' or a ratio such as 0.1")
    if isinstance(value, (int, float)):
        ratio = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if match:
            ratio = float(match.group(1)) / 100
        else:
            try:
                ratio = float(value)
            except ValueError:
                raise ValueError(
                    f"invalid relative threshold {value!r}: write a percentage such as '10%' or a ratio such as 0.1"
                ) from None
    if ratio < 0 or not math.isfinite(ratio):
        raise ValueError(f"relative threshold {value!r} must be a finite, non-negative number")
    return ratio


def _check_relative(value: str | float) -> str | float:
    relative_ratio(value)
    return value


def _no_bool(value: Any) -> Any:
    # YAML `true` must not silently become the number 1 (`cpu: true`, `maxIncrease: true`).
    if isinstance(value, bool):
        raise ValueError("expected a number or a string, not true/false")
    return value


# The schema can only state the plain forms ("10%", "0.1", a number >= 0); `relative_ratio` is the
# authority, so the two must agree on every value the README shows.
RELATIVE_PATTERN = r"^\s*\d+(\.\d+)?\s*%?\s*$"
Relative = Annotated[
    str | float,
    BeforeValidator(_no_bool),  # before the union's coercion, which turns `true` into 1.0
    AfterValidator(_check_relative),
    Field(json_schema_extra={"pattern": RELATIVE_PATTERN, "minimum": 0}),
]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ObjectMeta(BaseModel):
    # Kubernetes adds many fields to metadata (uid, resourceVersion, …); keep them, check the name.
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise ValueError(
                f"invalid name {value!r}: use at most 63 lower-case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value


# MLflow reserves these alias names; a schema `not` states it without a look-ahead, which the API
# server's regular expressions (RE2) do not have.
_NOT_RESERVED_ALIAS = {"not": {"pattern": r"^(latest|v\d+)$"}}


class ModelRef(_Model):
    name: str = Field(min_length=1, description="Registered model name in MLflow")
    candidate_alias: str = Field("challenger", min_length=1, json_schema_extra=_NOT_RESERVED_ALIAS)
    stable_alias: str = Field("champion", min_length=1, json_schema_extra=_NOT_RESERVED_ALIAS)
    candidate_stage: str | None = Field(
        None, description="Legacy stage workflow: the latest version in this stage is the candidate"
    )

    @model_validator(mode="after")
    def _aliases_differ(self) -> ModelRef:
        for alias in (self.candidate_alias, self.stable_alias):
            if alias == "latest" or re.fullmatch(r"v\d+", alias):
                raise ValueError(f"alias {alias!r} is reserved by MLflow ('latest' and 'v<digits>')")
        if self.candidate_alias == self.stable_alias:
            raise ValueError(f"candidateAlias and stableAlias are both {self.stable_alias!r}; they must differ")
        return self


def _no_schema_default(schema: dict[str, Any]) -> None:
    # Go writes 1e-06 for a tiny default, and YAML 1.1 readers (PyYAML, hence this project's own
    # spec files) read that as the string "1e-06": kept out of the CRD, `kubectl get -o yaml` never
    # shows the API server's copy of a default that a Python tool would then misread. pydantic
    # fills the default in either way.
    schema.pop("default", None)


class ShadowComparison(_Model):
    """When the shadow's regression predictions count as the stable's (canary/decision/tolerance.py).

    Only floats use it: class labels must be equal and probability vectors agree on their top
    class whatever it says. The router and the shadow comparator get it with every routing.
    """

    relative_tolerance: ToleranceValue = Field(
        DEFAULT_TOLERANCE.rel,
        json_schema_extra=_no_schema_default,
        description=(
            "Regression predictions a and b agree when |a-b| <= max(relativeTolerance x max(|a|,|b|), "
            "absoluteTolerance) (Python's math.isclose), for the shadow's agreement with the stable and "
            "for scoring predictions on feedback labels; e.g. 0.01 = within 1%. A finite number >= 0; "
            "default 0.000001"
        ),
    )
    absolute_tolerance: ToleranceValue = Field(
        DEFAULT_TOLERANCE.abs,
        json_schema_extra=_no_schema_default,
        description=(
            "Regression predictions closer than this agree whatever their relative difference: "
            "the bound for values near zero. A finite number >= 0; default 0.000000001"
        ),
    )

    def tolerance(self) -> Tolerance:
        return Tolerance(rel=self.relative_tolerance, abs=self.absolute_tolerance)


class ShadowSpec(_Model):
    enabled: bool = True
    duration: Duration = "5m"
    percent: int = Field(100, ge=1, le=100, description="Share of live requests mirrored to the shadow")
    comparison: ShadowComparison = Field(
        default_factory=ShadowComparison,
        description="How the shadow's predictions are compared with the stable's (regression values)",
    )


class CanarySpec(_Model):
    steps: list[int] = Field(
        default_factory=lambda: [10, 25, 50],
        min_length=1,
        max_length=20,
        description="Candidate traffic percent per step, strictly increasing",
        # Bounds for the schema only: `_increasing` checks them with a message naming the step.
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 100}},
    )
    interval: Duration = "1m"

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        for i, weight in enumerate(steps):
            if not 1 <= weight <= 100:
                raise ValueError(f"step {i} is {weight}%: each step must be between 1 and 100")
            if i and weight <= steps[i - 1]:
                raise ValueError(f"steps must increase: step {i} ({weight}%) is not above step {i - 1} ({steps[i - 1]}%)")
        return steps


NoData = Literal["fail", "inconclusive", "pass"]
PhaseName = Literal["shadow", "canary"]
JudgeName = Literal["threshold", "sequential"]

# Defaults of the sequential judge's settings (a threshold check must leave them unset).
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MAX_INTERVALS = 3


class MetricCheck(_Model):
    name: str = Field(min_length=1, max_length=63)
    template: str | None = None
    query: str | None = Field(None, description="PromQL with {{ variables }}, rendered per version")
    samples_query: str | None = Field(None, description="PromQL counting the observations behind `query`")
    judge: JudgeName = Field(
        "threshold",
        description="threshold: each interval's value against max/min/maxIncrease/maxDecrease. sequential: "
        "candidate vs stable on everything since the step began, an always-valid statistical test "
        "(latency, error_rate and accuracy templates)",
    )
    max: float | None = None
    min: float | None = None
    max_increase: Relative | None = None
    max_decrease: Relative | None = None
    tolerance: Relative | None = Field(
        None,
        description="judge sequential: how much worse than the stable is acceptable. Latency: a slowdown "
        "ratio ('10%' = 10% slower); error rate and accuracy: absolute points ('1%' = one point)",
    )
    # `_no_bool`: YAML `true` would otherwise read as 1 (maxIntervals 1, confidence 1.0).
    confidence: Annotated[float, Field(gt=0.5, lt=1), BeforeValidator(_no_bool)] | None = Field(
        None, description=f"judge sequential: confidence of each verdict (default {DEFAULT_CONFIDENCE})"
    )
    max_intervals: Annotated[int, Field(ge=1, le=100), BeforeValidator(_no_bool)] | None = Field(
        None,
        description="judge sequential: intervals a step waits for a clear verdict; after that, no regression "
        f"found counts as a pass (default {DEFAULT_MAX_INTERVALS}, fewer if progressDeadline ends sooner)",
    )
    failure_limit: int = Field(0, ge=0, description="Failed checks tolerated; one more rolls back")
    consecutive: bool = Field(False, description="Count only consecutive failures: a pass resets the count")
    no_data: NoData = "inconclusive"
    min_samples: int = Field(10, ge=0)
    phases: list[PhaseName] | None = Field(None, description="Phases the check runs in; default from the template")

    @model_validator(mode="after")
    def _shape(self) -> MetricCheck:
        if (self.template is None) == (self.query is None):
            raise ValueError(f"metric {self.name!r}: give exactly one of 'template' or 'query'")
        if self.template is not None and self.samples_query is not None:
            # A template brings its own sample count; accepting one here would silently ignore it.
            raise ValueError(f"metric {self.name!r}: samplesQuery goes with a custom query; template {self.template!r} counts its own samples")
        if self.judge == "sequential":
            self._sequential_shape()
            return self
        sequential_only = [
            alias for alias, value in (("tolerance", self.tolerance), ("confidence", self.confidence), ("maxIntervals", self.max_intervals))
            if value is not None
        ]  # fmt: skip
        if sequential_only:
            raise ValueError(
                f"metric {self.name!r}: {', '.join(sequential_only)} only apply with judge: sequential "
                "(this check's judge is threshold)"
            )
        if all(t is None for t in (self.max, self.min, self.max_increase, self.max_decrease)):
            raise ValueError(f"metric {self.name!r}: give at least one threshold (max, min, maxIncrease, maxDecrease)")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"metric {self.name!r}: min ({self.min}) is above max ({self.max})")
        for text in (self.query, self.samples_query):
            if text is not None:
                unknown = sorted(set(re.findall(r"{{\s*(\w+)\s*}}", text)) - set(templates.TEMPLATE_VARIABLES))
                if unknown:
                    raise ValueError(
                        f"metric {self.name!r}: unknown variable(s) {', '.join(unknown)} in query; "
                        f"known: {', '.join(templates.TEMPLATE_VARIABLES)}"
                    )
        return self

    def _sequential_shape(self) -> None:
        where = f"metric {self.name!r} (judge: sequential)"
        if self.template is None:
            raise ValueError(
                f"{where}: needs a builtin template (latency_p50/p95/p99, error_rate, accuracy): the judge reads "
                "raw counts the template knows how to query; a custom query can only be judged by threshold"
            )
        thresholds = [
            alias for alias, value in (("max", self.max), ("min", self.min), ("maxIncrease", self.max_increase), ("maxDecrease", self.max_decrease))
            if value is not None
        ]  # fmt: skip
        if thresholds:
            raise ValueError(
                f"{where}: {', '.join(thresholds)} belong to judge: threshold; the sequential judge's bound is "
                "`tolerance` (add a second, threshold check for an absolute limit)"
            )
        if self.tolerance is None:
            raise ValueError(
                f"{where}: give `tolerance`, how much worse than the stable is acceptable "
                "(latency: '10%' slower; error rate, accuracy: '1%' = one point)"
            )
        if self.failure_limit or self.consecutive:
            raise ValueError(
                f"{where}: failureLimit and consecutive do not apply: the judge already accounts for judging "
                "again every interval, and its fail is final"
            )
        if self.min_samples < 2:
            raise ValueError(f"{where}: minSamples must be at least 2 (a variance needs two observations)")

    @property
    def uses_baseline(self) -> bool:
        return self.judge == "sequential" or self.max_increase is not None or self.max_decrease is not None

    @property
    def sequential_confidence(self) -> float:
        return self.confidence if self.confidence is not None else DEFAULT_CONFIDENCE



def _provider_schema(schema: dict[str, Any]) -> None:
    # Computed, so a provider added to templates.py shows up in the generated CRD (and its drift test).
    schema["enum"] = sorted(templates.PROVIDERS)


class AnalysisSpec(_Model):
    provider: str = Field(
        "local",
        description="Which builtin template set the metrics' `template` names",
        json_schema_extra=_provider_schema,
    )
    metrics: list[MetricCheck] = Field(
        default_factory=list,
        # Kubernetes keeps metric names unique (and merges the list by name under server-side apply).
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _resolve(self) -> AnalysisSpec:
        if self.provider not in templates.PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r}; known: {', '.join(sorted(templates.PROVIDERS))}")
        seen: set[str] = set()
        for check in self.metrics:
            if check.name in seen:
                raise ValueError(f"metric name {check.name!r} appears twice")
            seen.add(check.name)
            if check.template is not None:
                try:
                    template = templates.lookup(self.provider, check.template)
                except KeyError as err:
                    raise ValueError(f"metric {check.name!r}: {err.args[0]}") from None
                if check.judge == "sequential" and template.judge is None:
                    usable = sorted(name for name, t in templates.PROVIDERS[self.provider].items() if t.judge is not None)
                    raise ValueError(
                        f"metric {check.name!r}: template {check.template!r} cannot be judged sequentially; "
                        f"templates that can: {', '.join(usable)}"
                    )
                if check.uses_baseline and not template.has_baseline:
                    raise ValueError(
                        f"metric {check.name!r}: template {check.template!r} has no baseline value, "
                        "so maxIncrease/maxDecrease cannot apply; use max/min"
                    )
        return self

    def template_for(self, check: MetricCheck) -> templates.Template:
        """The query set of a check: its template, or its own query as an ad-hoc template."""
        if check.template is not None:
            return templates.lookup(self.provider, check.template)
        return templates.Template(query=check.query or "", description="custom query", samples=check.samples_query)

    def phases_for(self, check: MetricCheck) -> tuple[str, ...]:
        if check.phases is not None:
            return tuple(check.phases)
        return self.template_for(check).phases


# ---------------------------------------------------------------------------------------------
# Offline gate: the candidate's own MLflow metrics against the stable version's, before any traffic

# Relative gate bounds are percentages only (see GateMetric._relative_is_a_percentage).
PERCENT_PATTERN = r"^\s*\d+(\.\d+)?\s*%\s*$"
Percent = Annotated[str, Field(json_schema_extra={"pattern": PERCENT_PATTERN})]
# The absolute counterpart of each relative bound, for the messages that point from one to the other.
_ABSOLUTE_OF = {"max_decrease": "maxDrop", "max_increase": "maxRise"}
_RELATIVE_OF = {"max_drop": "maxDecrease", "max_rise": "maxIncrease"}
Missing = Literal["fail", "pass"]


class GateMetric(_Model):
    name: str = Field(min_length=1, max_length=250, description="Metric key as logged in MLflow (mlflow.log_metric)")
    min: float | None = Field(None, allow_inf_nan=False, description="Lowest allowed candidate value")
    max: float | None = Field(None, allow_inf_nan=False, description="Highest allowed candidate value")
    max_drop: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Largest allowed fall below the stable version's value, in the metric's own units (0.01 = one accuracy point)",
    )
    max_rise: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Largest allowed rise above the stable version's value, in the metric's own units",
    )
    max_decrease: Percent | None = Field(
        None, description="Largest allowed fall below the stable version's value, relative: '2%'"
    )
    max_increase: Percent | None = Field(
        None, description="Largest allowed rise above the stable version's value, relative: '5%'"
    )
    missing: Missing | None = Field(
        None, description="When either version lacks the metric: fail (reject) or pass (skip it); default gate.missing"
    )

    @field_validator("max_decrease", "max_increase", mode="before")
    @classmethod
    def _relative_is_a_percentage(cls, value: Any, info: Any) -> Any:
        # Analysis checks read `maxDecrease: 0.01` as 1 %, but for an offline metric a data scientist
        # means one accuracy point. Neither reading is silently picked here: a bare number is refused
        # with both ways to say it.
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, str):
            raise ValueError(
                f"{value!r} is ambiguous in the gate: write a percentage such as '1%' for a bound relative "
                f"to the stable version's value, or {_ABSOLUTE_OF[info.field_name]}: {value!r} for an "
                "absolute amount in the metric's units"
            )
        if not re.fullmatch(PERCENT_PATTERN, value):
            raise ValueError(f"invalid relative bound {value!r}: write a percentage such as '5%'")
        return value

    @field_validator("max_drop", "max_rise", "min", "max", mode="before")
    @classmethod
    def _absolute_is_a_number(cls, value: Any, info: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number, not true/false")
        if isinstance(value, str) and "%" in value:
            relative = _RELATIVE_OF.get(info.field_name)
            hint = f"; write {relative}: {value!r} for a relative bound" if relative else ""
            raise ValueError(f"{value!r}: {to_camel(info.field_name)} is an absolute number in the metric's units{hint}")
        return value

    @model_validator(mode="after")
    def _shape(self) -> GateMetric:
        bounds = (self.min, self.max, self.max_drop, self.max_rise, self.max_decrease, self.max_increase)
        if all(b is None for b in bounds):
            raise ValueError(
                f"gate metric {self.name!r}: give at least one bound (min, max, maxDrop, maxRise, maxDecrease, maxIncrease)"
            )
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"gate metric {self.name!r}: min ({self.min}) is above max ({self.max})")
        return self

    @property
    def uses_baseline(self) -> bool:
        """True when the stable version's value is needed (a bound relative to it)."""
        return any(b is not None for b in (self.max_drop, self.max_rise, self.max_decrease, self.max_increase))


class GateSpec(_Model):
    metrics: list[GateMetric] = Field(
        min_length=1,
        max_length=50,
        description="Bounds on the candidate's MLflow metrics, alone or against the stable version's",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    missing: Missing = Field(
        "fail", description="When either version lacks a metric: fail (reject the candidate) or pass (skip the metric)"
    )

    @field_validator("metrics")
    @classmethod
    def _unique(cls, metrics: list[GateMetric]) -> list[GateMetric]:
        seen: set[str] = set()
        for metric in metrics:
            if metric.name in seen:
                raise ValueError(f"gate metric {metric.name!r} appears twice")
            seen.add(metric.name)
        return metrics

    def missing_for(self, metric: GateMetric) -> Missing:
        return metric.missing or self.missing


class PostPromotionSpec(_Model):
    watch: Duration = Field(
        description="How long the canary checks keep running on the promoted version; a breach undoes the promotion",
    )


# ---------------------------------------------------------------------------------------------
# Target: the KServe InferenceService a rollout drives on Kubernetes


# KServe's own rule for InferenceService names (a DNS-1035 label: it must start with a letter).
ISVC_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# `<name>-shadow-predictor` — the Service KServe creates for the shadow InferenceService — must still
# fit a 63-character DNS label: 63 - len("-shadow-predictor").
ISVC_NAME_MAX = 46
# Standard mode adds `<name>-baseline` (the stable with the logger, in the shadow phase), whose Service
# `<name>-baseline-predictor` must fit too: 63 - len("-baseline-predictor").
STANDARD_ISVC_NAME_MAX = 44
# Gateway API object names: DNS-1123 subdomains.
ROUTE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Kubernetes object names (ServingRuntime, ServiceAccount): DNS-1123 subdomains.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Resource names: `cpu`, `memory`, `nvidia.com/gpu` (an optional DNS prefix, then a name).
RESOURCE_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# A non-negative Kubernetes quantity: `500m`, `2Gi`, `1.5`, `1e3`.
QUANTITY_PATTERN = r"^(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?(\d+(\.\d*)?|\.\d+)))?$"


def _matching(pattern: str, what: str, example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"invalid {what} {value!r}: {example}")
        return value

    return AfterValidator(check)


def _check_quantity(value: str | int) -> str | int:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"quantity {value} must not be negative")
    elif not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"invalid quantity {value!r}: write e.g. '500m', '2', '1.5', '512Mi' or '2Gi'")
    return value


# Integer or string, as Kubernetes' own resource quantities (YAML `cpu: 1` and `memory: 2Gi` both work).
Quantity = Annotated[
    str | int,
    BeforeValidator(_no_bool),
    AfterValidator(_check_quantity),
    Field(json_schema_extra={"pattern": QUANTITY_PATTERN, "minimum": 0}),
]


def _check_resource_names(resources: dict[str, Any]) -> dict[str, Any]:
    # Checked here because the CRD schema cannot constrain map keys (no `propertyNames`).
    for name in resources:
        if not re.fullmatch(RESOURCE_NAME_PATTERN, name):
            raise ValueError(f"invalid resource name {name!r}: write e.g. 'cpu', 'memory' or 'nvidia.com/gpu'")
    return resources


ResourceMap = Annotated[dict[str, Quantity], AfterValidator(_check_resource_names)]


class ResourceRequirements(_Model):
    requests: ResourceMap = Field(default_factory=dict, description="Resource name -> quantity, e.g. cpu: 500m")
    limits: ResourceMap = Field(default_factory=dict, description="Resource name -> quantity, e.g. memory: 2Gi")


class PredictorOverrides(_Model):
    runtime: Annotated[
        str,
        Field(max_length=253, json_schema_extra={"pattern": OBJECT_NAME_PATTERN}),
        _matching(OBJECT_NAME_PATTERN, "runtime name", "the name of a ServingRuntime, e.g. 'kserve-mlserver'"),
    ] | None = Field(None, description="ServingRuntime of the predictor, e.g. kserve-mlserver; KServe picks one if unset")
    resources: ResourceRequirements | None = Field(None, description="Requests and limits of the predictor container")
    service_account_name: Annotated[
        str,
        Field(max_length=253, json_schema_extra={"pattern": OBJECT_NAME_PATTERN}),
        _matching(OBJECT_NAME_PATTERN, "service account name", "lower-case letters, digits, '-' and '.'"),
    ] | None = Field(None, description="ServiceAccount the predictor runs as (e.g. one holding storage credentials)")


class TargetSpec(_Model):
    inference_service: Annotated[
        str,
        # Length first (its message is clear), then the pattern with ours.
        Field(min_length=1, max_length=ISVC_NAME_MAX, json_schema_extra={"pattern": ISVC_NAME_PATTERN}),
        _matching(
            ISVC_NAME_PATTERN,
            "InferenceService name",
            "use lower-case letters, digits and '-', starting with a letter and ending with a letter or digit",
        ),
    ] = Field(
        description="Name of the InferenceService in the rollout's namespace; its shadow is <name>-shadow",
    )
    deployment_mode: Literal["Knative", "Standard"] = Field(
        "Knative",
        description="KServe deployment mode: Knative (canaryTrafficPercent on the predictor) or "
        "Standard (a second InferenceService and the weights of spec.target.httpRoute)",
    )
    http_route: Annotated[
        str,
        Field(min_length=1, max_length=253, json_schema_extra={"pattern": ROUTE_NAME_PATTERN}),
        _matching(ROUTE_NAME_PATTERN, "HTTPRoute name", "lower-case letters, digits, '-' and '.'"),
    ] | None = Field(
        None,
        description="Standard mode: the Gateway API HTTPRoute (in the rollout's namespace) clients reach the "
        "InferenceService through; modelrollout sets the weights of its backendRefs between the "
        "InferenceService's predictor Service and the canary's",
    )
    predictor: PredictorOverrides | None = Field(None, description="Settings for the predictor of the InferenceService")

    @model_validator(mode="after")
    def _route_for_standard(self) -> TargetSpec:
        # Released KServe (v0.20.0) does not split Standard-mode traffic between a stable and a
        # spec.canary entry (the HTTPRoute weights of kserve#5912 are only on master): the split is ours.
        if self.deployment_mode == "Standard":
            if self.http_route is None:
                raise ValueError(
                    "deploymentMode Standard needs httpRoute: KServe does not split Standard-mode traffic between "
                    "a stable and a canary in any release, so modelrollout sets the weights of a Gateway API "
                    "HTTPRoute you name (its backendRefs reach the InferenceService's predictor Service)"
                )
            if len(self.inference_service) > STANDARD_ISVC_NAME_MAX:
                raise ValueError(
                    f"inferenceService {self.inference_service!r} is longer than {STANDARD_ISVC_NAME_MAX} characters: "
                    "in Standard mode '<name>-baseline-predictor' must fit a 63-character Service name"
                )
        elif self.http_route is not None:
            raise ValueError(
                "httpRoute is for deploymentMode Standard; in Knative mode the InferenceService's "
                "canaryTrafficPercent splits the traffic"
            )
        return self


class ModelRolloutSpec(_Model):
    model: ModelRef
    target: TargetSpec | None = Field(
        None,
        description="The KServe InferenceService this rollout drives. Required by the KServe platform "
        "(the Kubernetes operator); the local platform ignores it",
    )
    shadow: ShadowSpec = Field(default_factory=ShadowSpec)
    canary: CanarySpec = Field(default_factory=CanarySpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    progress_deadline: Duration = Field(
        "10m", description="Longest a rollout may stay on one step (or wait for readiness) before it rolls back"
    )
    gate: GateSpec | None = Field(
        None,
        description="Offline gate before any traffic: the candidate's MLflow run metrics against the stable "
        "version's; a failing gate rejects the candidate without deploying it",
    )
    post_promotion: PostPromotionSpec | None = Field(
        None,
        description="Keep judging the promoted version for a while; a breach undoes the promotion automatically",
    )

    def max_intervals(self, check: MetricCheck, phase: str) -> int:
        """Windows a sequential check may hold a step of `phase` ("shadow" or "canary") for a clear
        verdict: its `maxIntervals`, else DEFAULT_MAX_INTERVALS or as many as end before
        `progressDeadline` (a 5m shadow under a 10m deadline: 1), so the default never collides
        with the deadline."""
        if check.max_intervals is not None:
            return check.max_intervals
        window = parse_duration(self.shadow.duration if phase == "shadow" else self.canary.interval)
        fit = math.ceil(parse_duration(self.progress_deadline) / window) - 1
        return max(1, min(DEFAULT_MAX_INTERVALS, fit))

    def watch_checks(self) -> list[MetricCheck]:
        """The checks of the post-promotion watch: the canary checks' absolute bounds (max, min).

        After promotion the previous stable serves no traffic, so it has no value in the window to
        compare with: bounds relative to it (maxIncrease, maxDecrease) are dropped, and a check
        with no absolute bound does not run.
        """
        checks = []
        for check in self.analysis.metrics:
            if "canary" not in self.analysis.phases_for(check) or (check.max is None and check.min is None):
                continue
            checks.append(check.model_copy(update={"max_increase": None, "max_decrease": None}))
        return checks

    @model_validator(mode="after")
    def _watch_can_judge(self) -> ModelRolloutSpec:
        if self.post_promotion is None:
            return self
        watch, interval = parse_duration(self.post_promotion.watch), parse_duration(self.canary.interval)
        if watch < interval:
            raise ValueError(
                f"postPromotion.watch ({self.post_promotion.watch}) is shorter than canary.interval "
                f"({self.canary.interval}): the watch judges whole intervals, so it would judge nothing"
            )
        if not self.watch_checks():
            raise ValueError(
                "postPromotion.watch needs a check to run: no analysis metric that runs in the canary phase has "
                "max or min (bounds relative to the stable, maxIncrease/maxDecrease, cannot apply once the "
                "previous version serves no traffic)"
            )
        return self

    @model_validator(mode="after")
    def _platform_provider_needs_target(self) -> ModelRolloutSpec:
        # knative/istio templates select series by the InferenceService's revisions/workloads.
        if self.analysis.provider != "local" and self.target is None:
            raise ValueError(
                f"analysis.provider {self.analysis.provider!r} reads KServe metrics: it needs spec.target "
                "(the InferenceService); use provider 'local' on the local platform"
            )
        return self

    @model_validator(mode="after")
    def _deadline_fits(self) -> ModelRolloutSpec:
        deadline = parse_duration(self.progress_deadline)
        windows = [("canary.interval", self.canary.interval)]
        if self.shadow.enabled:
            windows.append(("shadow.duration", self.shadow.duration))
        for field, value in windows:
            if parse_duration(value) >= deadline:
                raise ValueError(
                    f"progressDeadline ({self.progress_deadline}) must be longer than {field} ({value}), "
                    "or no step could ever finish"
                )
        # A sequential check may hold a step for maxIntervals windows: the deadline must outlast them.
        # (The default fits itself in: `max_intervals`.)
        window_of = dict(windows)
        for check in self.analysis.metrics:
            if check.judge != "sequential" or check.max_intervals is None:
                continue
            for phase in self.analysis.phases_for(check):
                field = "canary.interval" if phase == "canary" else "shadow.duration"
                if field not in window_of:
                    continue
                waits = check.max_intervals * parse_duration(window_of[field])
                if waits >= deadline:
                    raise ValueError(
                        f"metric {check.name!r}: maxIntervals ({check.max_intervals}) x {field} "
                        f"({window_of[field]}) is not shorter than progressDeadline ({self.progress_deadline}): "
                        "the deadline would roll back a step the judge is still allowed to wait on"
                    )
        return self


# ---------------------------------------------------------------------------------------------
# Status


class Phase(str, Enum):
    IDLE = "Idle"
    # The offline gate is reading and judging MLflow metrics; the candidate is not deployed.
    GATING = "Gating"
    SHADOW = "Shadow"
    CANARY = "Canary"
    PROMOTING = "Promoting"
    # Promoted (the stable alias moved) and still judged for postPromotion.watch; a breach undoes it.
    WATCHING = "Watching"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    PAUSED = "Paused"
    ABORTED = "Aborted"

    @property
    def terminal(self) -> bool:
        """At rest, waiting for a new candidate. Gating and Watching are not: each has a decision pending."""
        return self in (Phase.IDLE, Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED)


Verdict = Literal["pass", "fail", "inconclusive", "error"]


class MetricStatus(_Model):
    name: str
    verdict: Verdict
    candidate: float | None = None
    baseline: float | None = None
    samples: float | None = None
    threshold: str = ""
    failures: int = 0
    message: str = ""
    checked_at: datetime | None = None


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


class Transition(_Model):
    time: datetime
    from_phase: Phase = Field(alias="from")
    to: Phase
    version: str | None = None
    reason: str = ""


class Weights(_Model):
    stable: int = 100
    candidate: int = 0
    shadow: int = Field(0, description="Share of requests mirrored to the shadow, percent")


# `rejected`: the offline gate failed, so the candidate was never deployed (it ends RolledBack).
RollbackKind = Literal["failure", "abort", "superseded", "undo", "rejected"]


class RolloutStatus(_Model):
    phase: Phase = Phase.IDLE
    stable_version: str | None = None
    candidate_version: str | None = None
    # The candidate-alias target last acted upon: a rollout starts when the alias points elsewhere.
    observed_candidate_version: str | None = None
    # Where the candidate alias points while a phase that does not stop for it runs (Promoting,
    # RollingBack, Watching): that version starts when the phase ends; one the alias leaves before
    # then is reported skipped.
    next_candidate_version: str | None = None
    previous_stable_version: str | None = None
    step: int | None = None
    weights: Weights = Field(default_factory=Weights)
    phase_started_at: datetime | None = None
    step_started_at: datetime | None = None
    # Start of the current analysis window; unset until the candidate is ready.
    window_started_at: datetime | None = None
    # When the step's first window started (the candidate ready at this step's weights): the
    # sequential judge weighs everything since then, the threshold judge one window.
    analysis_started_at: datetime | None = None
    paused_from: Phase | None = None
    rollback_kind: RollbackKind | None = None
    message: str = ""
    # Id of the last user command carried out, so a command is never applied twice after a restart.
    last_command_id: str | None = None
    checks: list[MetricStatus] = Field(default_factory=list)
    # The offline gate's verdict per metric for the current candidate (empty without a gate).
    gate_checks: list[MetricStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    history: list[Transition] = Field(default_factory=list)
    observed_generation: int | None = Field(
        None,
        description=(
            "metadata.generation of the spec the operator last acted on; behind metadata.generation "
            "while a new spec is not read yet, or is invalid (then SpecValid is False)"
        ),
    )


class ModelRollout(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    api_version: Literal["modelrollout.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["ModelRollout"] = KIND
    metadata: ObjectMeta
    spec: ModelRolloutSpec
    status: RolloutStatus | None = None


# ---------------------------------------------------------------------------------------------
# Loading


class SpecError(ValueError):
    """A rollout document that cannot be used; the message names the document, field and problem."""


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(document)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        elif problem["type"] == "literal_error":
            message = f"{message} (got {problem.get('input')!r})"
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)


def parse_rollout(document: Any, source: str = "rollout") -> ModelRollout:
    if not isinstance(document, dict):
        raise SpecError(f"{source}: expected a mapping with apiVersion, kind, metadata and spec, got {type(document).__name__}")
    try:
        return ModelRollout.model_validate(document)
    except ValidationError as err:
        raise SpecError(_describe(err, source)) from None


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-6` as the number Kubernetes (YAML 1.2) reads: YAML 1.1
    wants a dot in a float, so plain PyYAML would hand the spec the string "1e-6"."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_rollouts(text: str, source: str = "rollout.yaml") -> list[ModelRollout]:
    """Every ModelRollout in a (multi-document) YAML text; names must be unique."""
    try:
        documents = [d for d in yaml.load_all(text, Loader=_SpecLoader) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{source}:{where}: malformed YAML: {problem}") from None
    if not documents:
        raise SpecError(f"{source}: no ModelRollout document found")
    rollouts = [parse_rollout(d, f"{source}[{i}]" if len(documents) > 1 else source) for i, d in enumerate(documents)]
    names = [r.metadata.name for r in rollouts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{source}: rollout name(s) used twice: {', '.join(duplicates)}")
    return rollouts
