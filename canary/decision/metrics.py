"""The metrics provider port and its Prometheus implementation.

The analysis (`canary/decision/analysis.py`) renders a query template for one version with `render`, then
asks a `MetricsProvider` for the single number it evaluates to. The provider knows nothing about
thresholds or baselines; it only turns PromQL into `float | None` or a `MetricsError` that says
why not. The split of errors is what the analysis acts on:

- `QueryError`: the template itself is wrong (unknown or missing variable): a spec bug.
- `QueryRejected`: Prometheus refused to parse the query (HTTP 400 `bad_data`): a spec bug.
- `QueryFailed`: Prometheus parsed it but could not evaluate it (HTTP 422, e.g. many-to-many
  matching, or a 5xx): usually a query that does not fit the data.
- `UnexpectedResult`: it evaluated to several series, a range vector or a string, not one number.
- `MetricsUnavailable`: Prometheus cannot be reached (refused, timeout, 503, not a Prometheus API):
  transient, try again next interval.

`None` is "no data", not an error: an empty vector (no such series yet) or NaN/±Inf, which is what
`0/0` and `histogram_quantile` over a window without requests give. The analysis judges missing
data with the check's `noData` setting and `minSamples`.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from canary.decision.templates import TEMPLATE_VARIABLES

# `{{ name }}` with any inner whitespace; what is between the braces is checked separately so a
# malformed placeholder ("{{ model-name }}") is an error rather than text sent to Prometheus.
_PLACEHOLDER = re.compile(r"{{(.*?)}}", re.DOTALL)
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*")
# How the library words a non-200 answer: "HTTP Status Code 400 (b'{...}')".
_LIBRARY_HTTP_ERROR = re.compile(r"HTTP Status Code (\d+) \((b(['\"]).*\3)\)\Z", re.DOTALL)
_MAX_TEXT_IN_MESSAGE = 300


class MetricsError(Exception):
    """A query could not be turned into a value; the message is one line naming the cause."""


class QueryError(MetricsError, ValueError):
    """The query template cannot be rendered: unknown, missing or malformed variable."""


class QueryRejected(MetricsError):
    """Prometheus refused the query as invalid (bad_data: a parse or type error)."""


class QueryFailed(MetricsError):
    """Prometheus accepted the query but could not evaluate it (execution error, server error)."""


class UnexpectedResult(MetricsError):
    """The query did not evaluate to one number (several series, a range vector, a string)."""


class MetricsUnavailable(MetricsError):
    """Prometheus could not be reached or did not answer like a Prometheus API."""


def without_credentials(url: str) -> str:
    """`url` with any `user:password@` shown as `***@`: what messages, the status and reports may
    show of a Prometheus URL that carries basic-auth credentials."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def escape_label_value(value: str) -> str:
    """`value` made safe inside a double-quoted PromQL string (a label matcher's value).

    Only the backslash, the double quote and line breaks are special there. Escaping them means a
    model called `x"} or vector(1) #` matches a label with exactly that value instead of closing
    the matcher and injecting its own PromQL.
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def render(query: str, variables: Mapping[str, str]) -> str:
    """`query` with every `{{ name }}` replaced by the escaped value of `variables[name]`.

    Names must be in `canary.decision.templates.TEMPLATE_VARIABLES`; an unknown, missing or malformed one
    raises QueryError naming it. Values are inserted as they are apart from `escape_label_value`:
    templates put them inside double-quoted label matchers (`version="{{ version }}"`), where the
    escaping keeps a hostile MLflow model name or rollout name from breaking out; the one value
    used outside quotes, `interval`, is a duration that the spec has already validated and that
    escaping leaves unchanged. Substitution is one pass, so a value containing `{{ x }}` stays
    literal text.
    """
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        inner = _NAME.fullmatch(match.group(1))
        if inner is None:
            problems.append(f"malformed placeholder {match.group(0)!r}")
            return match.group(0)
        name = inner.group(1)
        if name not in TEMPLATE_VARIABLES:
            problems.append(f"unknown variable {name!r} (known: {', '.join(TEMPLATE_VARIABLES)})")
            return match.group(0)
        if name not in variables:
            problems.append(f"no value for variable {name!r}")
            return match.group(0)
        return escape_label_value(str(variables[name]))

    rendered = _PLACEHOLDER.sub(substitute, query)
    # A lone "{{" (no closing braces) is a broken placeholder too; look for it in the template,
    # not the result, where a value may legitimately contain braces.
    if "{{" in _PLACEHOLDER.sub("", query):
        problems.append("unclosed '{{' placeholder")
    if problems:
        raise QueryError(f"cannot render query {_shorten(query)!r}: {'; '.join(problems)}")
    return rendered


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: its labels and its (unix time, value) points, oldest first."""

    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def has_data(self) -> bool:
        return any(math.isfinite(value) for _, value in self.points)


class MetricsProvider(Protocol):
    """What the analysis needs from a metrics backend: one number per query, or a histogram's series."""

    def query_value(self, promql: str) -> float | None:
        """The query's value now; None when there is no data (empty result, NaN, ±Inf).

        Raises a MetricsError subclass when the query is invalid, does not reduce to one number,
        or the backend cannot be reached.
        """
        ...

    def query_vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Every series of the query now as (labels, value): a histogram's buckets by `le` for the
        sequential judge. Raises as `query_value`."""
        ...


class PrometheusProvider:
    """MetricsProvider over Prometheus' HTTP API, using `prometheus_api_client`.

    The library's defaults are changed where they hurt a control loop: it retries a refused
    connection three times with backoff (~6 s before an error) and has no timeout; here a dead
    Prometheus is reported at once and every request has `timeout`, so one unreachable backend
    never stalls an analysis interval.
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.shown_url = without_credentials(self.url)  # the URL in messages: never a password
        self.timeout = timeout
        self._client = PrometheusConnect(
            url=self.url,
            timeout=timeout,  # type: ignore[arg-type]  # requests takes a float; the hint says int
            # No retries; read=False hands a read timeout through as itself (urllib3 would wrap
            # it in a MaxRetryError that requests reports as a connection error).
            retry=Retry(total=0, read=False, raise_on_status=False),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query_value(self, promql: str, at: float | None = None) -> float | None:
        """The value of `promql` as an instant query, evaluated now or at unix time `at`.

        None for no data (empty vector, NaN, ±Inf). A result of several series raises
        UnexpectedResult naming the count: a check must aggregate to one number.
        """
        result = self._query(promql, at)
        if not result:
            return None
        if _is_scalar(result):
            return _finite(result[1], promql)
        if any(not isinstance(item, dict) or "value" not in item for item in result):
            # An instant query of `x[5m]` gives a matrix: each series has "values", no "value".
            raise UnexpectedResult(
                f"query returned a range vector, a check needs an instant value: {_shorten(promql)}"
            )
        if len(result) > 1:
            shown = ", ".join(_series_name(item) for item in result[:3])
            more = ", ..." if len(result) > 3 else ""
            raise UnexpectedResult(
                f"query returned {len(result)} series ({shown}{more}), a check needs one number: "
                f"aggregate it, e.g. sum(...): {_shorten(promql)}"
            )
        return _finite(result[0]["value"][1], promql)

    def check_query(self, promql: str) -> int:
        """Validate `promql` against Prometheus without judging its value (pre-flight, lint).

        Runs it as an instant query; returns how many series it gives now (0 when no data yet, 1
        for a scalar), so a caller may warn about a query that does not aggregate. Raises
        QueryRejected for a query Prometheus cannot parse, QueryFailed or MetricsUnavailable
        otherwise.
        """
        result = self._query(promql, None)
        if _is_scalar(result):
            return 1
        return len(result)

    def metric_names(self) -> list[str]:
        """Every metric name Prometheus holds series of (`/api/v1/label/__name__/values`), for the
        check that a provider's series exist at all (canary/decision/series_check.py). Raises MetricsError."""
        return [str(name) for name in self._call(self._client.all_metrics, "", "/api/v1/label/__name__/values")]

    def query_vector(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """Every series of an instant query as (labels, value), NaN/±Inf included as they are.

        For the few callers that want several series on purpose (a histogram's buckets by `le`);
        a check never does, it goes through `query_value`. A scalar is one series without labels.
        """
        result = self._query(promql, at)
        if _is_scalar(result):
            return [({}, _number(result[1], promql))]
        if any(not isinstance(item, dict) or "value" not in item for item in result):
            raise UnexpectedResult(f"query returned a range vector, expected an instant vector: {_shorten(promql)}")
        return [(dict(item.get("metric", {})), _number(item["value"][1], promql)) for item in result]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """The query evaluated every `step` seconds from unix time `start` to `end` (both whole
        seconds, as the library rounds them), one RangeSeries per result series.

        Points where the query had no value are simply absent (Prometheus leaves them out); NaN
        points (0/0, a quantile of an empty histogram) are kept as NaN so a plot shows the gap.
        """
        if not (math.isfinite(start) and math.isfinite(end) and end >= start):
            raise ValueError(f"query_range: need start <= end, got {start!r} .. {end!r}")
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"query_range: step must be a positive number of seconds, got {step!r}")
        result = self._call(
            lambda: self._client.custom_query_range(
                promql,
                start_time=datetime.fromtimestamp(start, timezone.utc),
                end_time=datetime.fromtimestamp(end, timezone.utc),
                step=repr(float(step)),
            ),
            promql,
            "/api/v1/query_range",
        )
        if _is_scalar(result) or any(not isinstance(item, dict) or "values" not in item for item in result):
            raise UnexpectedResult(f"range query did not return a matrix: {_shorten(promql)}")
        return [
            RangeSeries(
                labels=dict(item.get("metric", {})),
                points=tuple((float(t), _number(v, promql)) for t, v in item["values"]),
            )
            for item in result
        ]

    def _query(self, promql: str, at: float | None) -> list[Any]:
        params = {} if at is None else {"time": repr(float(at))}
        return self._call(lambda: self._client.custom_query(promql, params=params), promql, "/api/v1/query")

    def _call(self, request: Callable[[], Any], promql: str, endpoint: str) -> list[Any]:
        """Run one library request, turning every way it can fail into a MetricsError."""
        try:
            return list(request())
        except PrometheusApiClientException as exc:
            raise self._http_error(str(exc), promql, endpoint) from None
        except requests.Timeout:
            raise MetricsUnavailable(
                f"Prometheus at {self.shown_url} did not answer within {self.timeout:g} s"
            ) from None
        except requests.ConnectionError as exc:
            raise MetricsUnavailable(
                f"cannot connect to Prometheus at {self.shown_url}: {_root_cause(exc)}"
            ) from None
        except (ValueError, KeyError, TypeError):
            # 200 but not `{"data": {"result": ...}}` JSON: the URL is some other HTTP server.
            # (Before RequestException: requests' JSONDecodeError is both.)
            raise MetricsUnavailable(
                f"{self.shown_url} did not answer like a Prometheus API (is the URL right?)"
            ) from None
        except requests.RequestException as exc:
            raise MetricsUnavailable(
                f"request to Prometheus at {self.shown_url} failed: {_one_line(str(exc))}"
            ) from None

    def _http_error(self, message: str, promql: str, endpoint: str = "/api/v1/query") -> MetricsError:
        """Turn the library's "HTTP Status Code N (b'...')" into our error with Prometheus' text."""
        match = _LIBRARY_HTTP_ERROR.match(message)
        status = int(match.group(1)) if match else 0
        body: Any = None
        if match:
            try:
                body = json.loads(ast.literal_eval(match.group(2)))
            except (ValueError, SyntaxError):
                body = None
        if isinstance(body, dict) and body.get("error"):
            error_type = body.get("errorType", "error")
            detail = _shorten(str(body["error"]))
            if error_type == "bad_data" or status == 400:
                return QueryRejected(f"Prometheus rejected the query: {detail}: {_shorten(promql)}")
            if error_type in ("timeout", "canceled", "unavailable") or status == 503:
                return MetricsUnavailable(f"Prometheus at {self.shown_url} could not answer: {detail}")
            return QueryFailed(
                f"Prometheus could not evaluate the query ({error_type}): {detail}: {_shorten(promql)}"
            )
        # Not Prometheus' JSON error: a proxy, a Prometheus still starting, or another server.
        return MetricsUnavailable(
            f"Prometheus at {self.shown_url} answered HTTP {status or '?'} to {endpoint} "
            f"(is the URL right and Prometheus ready?)"
        )


def _is_scalar(result: list[Any]) -> bool:
    # The library returns data.result and drops resultType; a scalar or string is [time, "value"].
    return len(result) == 2 and not isinstance(result[0], dict)


def _number(raw: Any, promql: str) -> float:
    """A sample value as Prometheus writes it ("0.25", "NaN", "+Inf") as a float."""
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise UnexpectedResult(f"query returned {raw!r}, not a number: {_shorten(promql)}") from None


def _finite(raw: Any, promql: str) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise UnexpectedResult(f"query returned {raw!r}, not a number: {_shorten(promql)}") from None
    return value if math.isfinite(value) else None


def _series_name(item: Any) -> str:
    labels = dict(item.get("metric", {})) if isinstance(item, dict) else {}
    name = labels.pop("__name__", "")
    inner = ",".join(f'{key}="{escape_label_value(str(value))}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _root_cause(exc: BaseException) -> str:
    """The innermost cause, e.g. "[Errno 111] Connection refused", not urllib3's nested repr."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    found = re.search(r"\[Errno \d+\] [^'\")]+", text)
    return found.group(0) if found else _one_line(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shorten(text: str) -> str:
    """`text` on one line, its middle cut out when long: Prometheus puts the gist of an error at
    the end ("... many-to-many matching not allowed") after a list of series."""
    flat = _one_line(text)
    if len(flat) <= _MAX_TEXT_IN_MESSAGE:
        return flat
    half = (_MAX_TEXT_IN_MESSAGE - 5) // 2
    return f"{flat[:half]} ... {flat[-half:]}"
