"""The page and the plots without Prometheus: hostile text stays text, empty evidence still draws."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from canary.decision.metrics import RangeSeries
from canary.decision.spec import MetricStatus, ModelRollout, Phase, RolloutStatus, Transition
from controller.report import page as report
from controller.report import plots as report_plots
from controller.report.metrics import CheckEvidence, LatencyEvidence, Window
from controller.report.sources import RolloutRecord
from controller.report.timeline import RolloutEvent, attempts

T0 = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
HOSTILE = '<img src=x onerror="alert(1)">'


def record() -> RolloutRecord:
    rollout = ModelRollout.model_validate(
        {
            "metadata": {"name": "iris"},
            "spec": {
                "model": {"name": "iris-classifier"},
                "shadow": {"duration": "30s"},
                "canary": {"steps": [20, 50], "interval": "20s"},
                "analysis": {"metrics": [{"name": HOSTILE, "template": "latency_p95", "maxIncrease": "50%"}]},
            },
        }
    )

    def at(seconds: int) -> datetime:
        return T0 + timedelta(seconds=seconds)

    reason = f"{HOSTILE} 0.3 vs stable 0.1 (+200%, maxIncrease 50%) (failed 1x, failureLimit 0)"
    status = RolloutStatus(
        phase=Phase.ROLLED_BACK,
        stable_version="1",
        candidate_version="2",
        message=reason,
        rollback_kind="failure",
        checks=[MetricStatus(name=HOSTILE, verdict="fail", candidate=0.3, baseline=0.1, checked_at=at(50))],
        history=[
            Transition(time=at(0), from_phase=Phase.IDLE, to=Phase.SHADOW, version="2", reason="alias moved"),
            Transition(time=at(30), from_phase=Phase.SHADOW, to=Phase.CANARY, version="2", reason="all passed"),
            Transition(time=at(50), from_phase=Phase.CANARY, to=Phase.ROLLING_BACK, version="2", reason=reason),
            Transition(time=at(51), from_phase=Phase.ROLLING_BACK, to=Phase.ROLLED_BACK, version="2", reason=reason),
        ],
    )
    events = (RolloutEvent(at(50), "Warning", "RollingBack", f"v2: {reason}"),)
    return RolloutRecord(rollout, status, events, "test")


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.shape[0] > 200 and float(pixels.std()) > 0.02


def test_hostile_text_is_escaped_and_the_page_links_only_its_images(tmp_path: Path):
    made = report.write(record(), tmp_path, provider=None, now=T0 + timedelta(minutes=5))
    html = made.index.read_text(encoding="utf-8")
    assert HOSTILE not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert re.findall(r"<img [^>]*>", html) == ['<img src="timeline.png" alt="timeline of phases and weights">']
    assert '<div class="phase">RolledBack</div>' in html and "decided in Canary 1/2 (20%)" in html
    assert made.summary.startswith("RolledBack: v2 vs v1 (iris), 51 s, decided in Canary 1/2 (20%): ")
    assert_png(tmp_path / "timeline.png")


def test_a_second_report_removes_the_images_of_the_first(tmp_path: Path):
    (tmp_path / "check-3-gone.png").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    report.write(record(), tmp_path, provider=None, now=T0 + timedelta(minutes=5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "notes.txt", "timeline.png"]


def test_plots_without_data_still_draw(tmp_path: Path):
    rec = record()
    [attempt] = attempts(rec.rollout.spec, rec.status, rec.events)
    check = rec.rollout.spec.analysis.metrics[0]
    template = rec.rollout.spec.analysis.template_for(check)
    empty = RangeSeries(labels={}, points=((T0.timestamp() + 5, float("nan")),))
    windows = tuple(Window(s, empty, None, None) for s in attempt.analysed())
    evidence = CheckEvidence(check, template, windows, recorded=None, problem="Prometheus rejected the query: x")
    assert not evidence.has_data
    report_plots.check(evidence, attempt, T0, tmp_path / "check.png")
    report_plots.latency([LatencyEvidence("shadow", "Shadow", 30, (), (), (), "no histogram")], attempt, tmp_path / "a.png")
    report_plots.latency([], attempt, tmp_path / "b.png")
    for name in ("check.png", "a.png", "b.png"):
        assert_png(tmp_path / name)


def test_latency_plot_with_buckets(tmp_path: Path):
    rec = record()
    [attempt] = attempts(rec.rollout.spec, rec.status, rec.events)
    bounds = (0.01, 0.02, 0.05, 0.1, float("inf"))
    h = LatencyEvidence("canary", "canary steps 20%", 20, bounds, (0, 2, 10, 40, 40), (30, 90, 100, 100, 100))
    report_plots.latency([h], attempt, tmp_path / "latency.png")
    assert_png(tmp_path / "latency.png")
    pixels = imread(tmp_path / "latency.png")[:, :, :3]
    # Both colours are drawn: the stable's blue and the candidate's orange-red bars.
    for colour in (report_plots.STABLE_COLOUR, report_plots.CANDIDATE_COLOUR):
        rgb = np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=2) < 0.05).sum() > 500, colour
