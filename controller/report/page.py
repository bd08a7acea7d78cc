"""`modelrollout report NAME`: one rollout attempt as an HTML page with PNG plots.

It answers "what happened and why": the timeline of phases and traffic weights, each check over
time against its threshold with the verdict at every step's end, latency distributions of the
candidate and the stable, and the decision with its evidence (the reason, the last recorded
checks, the history and the events). Measurements are taken again from Prometheus over the
attempt's span (`metrics`); the rest comes from the status, events and spec
(`sources`, `timeline`).

The directory holds `index.html` and the PNGs it links, nothing else of ours, so it can be copied,
served or logged to MLflow as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from canary.decision.metrics import PrometheusProvider
from controller.report import html as report_html
from controller.report import plots as report_plots
from controller.report.metrics import (
    CheckEvidence,
    LatencyEvidence,
    measure_checks,
    measure_latency,
)
from controller.report.sources import RolloutRecord
from controller.report.timeline import Attempt, attempts, select

INDEX = "index.html"
TIMELINE_IMAGE = "timeline.png"
LATENCY_IMAGE = "latency.png"
_OURS = re.compile(r"^(index\.html|timeline\.png|latency\.png|check-\d+-[\w.-]*\.png)$")


class ReportError(Exception):
    """The report cannot be made (nothing rolled out, no such version); one line."""


@dataclass(frozen=True)
class Report:
    directory: Path
    index: Path
    images: tuple[Path, ...]
    attempt: Attempt
    summary: str


def default_directory(name: str) -> Path:
    return Path(f"modelrollout-report-{name}")


def summary_line(record: RolloutRecord, attempt: Attempt, now: datetime) -> str:
    """One line for the MLflow version and the terminal: outcome, versions, time, reason."""
    phase = attempt.final_phase.value
    took = ((attempt.end or now) - attempt.start).total_seconds()
    where = report_html.decided_in(attempt)
    head = f"{phase}: v{attempt.version} vs v{attempt.stable_version or '?'} ({record.name}), {took:.0f} s"
    return f"{head}{f', decided in {where}' if where else ''}: {report_html.decision_reason(attempt)}"


def _check_image(index: int, name: str) -> str:
    slug = re.sub(r"[^\w.-]+", "-", name).strip("-.")[:40] or "check"
    return f"check-{index + 1}-{slug}.png"


def write(
    record: RolloutRecord,
    directory: Path,
    provider: PrometheusProvider | None,
    version: str | None = None,
    now: datetime | None = None,
) -> Report:
    """Write the report of the latest attempt (or the latest of `version`) into `directory`.

    `provider` None skips every measurement (`--no-metrics`): the page then holds the timeline
    and the recorded evidence only. MetricsUnavailable propagates when Prometheus stops answering.
    """
    now = now or datetime.now(timezone.utc)
    spec = record.rollout.spec
    try:
        attempt = select(spec, record.status, record.events, version)
    except ValueError as err:
        raise ReportError(f"rollout {record.name!r}: {err}") from None
    every = attempts(spec, record.status, record.events)
    latest = attempt.start == every[-1].start

    checks: list[tuple[CheckEvidence, str]] = []
    latency: list[LatencyEvidence] = []
    if provider is not None:
        evidence = measure_checks(record, attempt, provider, now, latest)
        checks = [(e, _check_image(i, e.check.name)) for i, e in enumerate(evidence)]
        latency = measure_latency(record, attempt, provider, now)

    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        if old.is_file() and _OURS.match(old.name):
            old.unlink()  # a report of an earlier spec may have had other checks
    images = [directory / TIMELINE_IMAGE]
    report_plots.timeline(attempt, now, images[0])
    for evidence_item, image in checks:
        images.append(directory / image)
        report_plots.check(evidence_item, attempt, now, images[-1])
    latency_image = None
    if provider is not None:
        latency_image = LATENCY_IMAGE
        images.append(directory / LATENCY_IMAGE)
        report_plots.latency(latency, attempt, images[-1])

    summary = summary_line(record, attempt, now)
    page = report_html.Page(
        record=record,
        attempt=attempt,
        every_attempt=every,
        now=now,
        summary=summary,
        timeline_image=TIMELINE_IMAGE,
        checks=checks,
        latency=latency,
        latency_image=latency_image,
        metrics_note=None if provider is not None else "Not measured: the report was made with --no-metrics.",
        prometheus=provider.shown_url if provider is not None else None,
    )
    index = directory / INDEX
    index.write_text(report_html.render(page), encoding="utf-8")
    return Report(directory, index, tuple(images), attempt, summary)
