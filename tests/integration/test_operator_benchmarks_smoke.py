"""The quick modes of the two operator benchmarks: they run end to end and print whole tables.

Each runs the operator as a process against its own Kubernetes API emulator; MLflow and Prometheus
are the session's (the benchmarks take running ones, which saves starting an `mlflow server` per
run; the session server has the webhook settings the promotion benchmark needs). The figures are
machine-dependent, so only their shape is checked: every row there, every number positive and
finite, the figures that must hold on any machine (e.g. a flat memory, no steady-state writes).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from benchmarks import operator_scale, promotion_latency
from tests.fixtures.printed_tables import positive, table


def test_operator_scale_quick_run_prints_both_sizes_and_their_ratios(
    capsys: pytest.CaptureFixture[str], mlflow_server: Any, prometheus_server: Any
) -> None:
    argv = ["--quick", "--mlflow-uri", mlflow_server.url, "--prometheus-url", prometheus_server.url]
    assert operator_scale.main(argv) == 0
    out = capsys.readouterr().out
    sizes = [operator_scale.BASELINE_N, operator_scale.QUICK_N]

    first_round = table(out, "rollouts")
    assert [int(r[0]) for r in first_round] == sizes
    for _n, ready, first, last, round_s, per_rollout, operator_cpu, harness in first_round:
        assert positive(first) <= positive(last)
        positive(ready), positive(round_s), positive(per_rollout), positive(harness)
        assert float(operator_cpu.rstrip("%")) >= 0

    steady = table(out.split("steady state")[1], "rollouts")
    assert [int(r[0]) for r in steady] == sizes
    for n, per_s, asked, reconcile_ms, cpu_ms, operator_cpu, harness, writes, rss, rss_end, end_over_start in steady:
        assert float(asked) == int(n) / operator_scale.QUICK_TICK_S
        # Driven by the tick: about N / tick reconciles a second (a two-tick window counts 2N +- N).
        assert 0.5 * float(asked) <= positive(per_s) <= 1.5 * float(asked), (n, per_s)
        positive(reconcile_ms), positive(cpu_ms), positive(operator_cpu), positive(harness)
        assert int(writes) == 0, "an idle rollout's reconcile wrote to the API"
        assert positive(rss) > 50 and positive(rss_end) > 50  # MiB: a Python process with kopf and MLflow
        assert 0.9 < positive(end_over_start) < 1.1

    # Rollouts and InferenceServices come from kopf's watches and nothing unchanged is written: an
    # idle rollout makes no API request at all (before the watches' view: 4 per rollout per tick).
    requests = table(out.split("API requests over")[1], "rollouts")
    assert [int(r[0]) for r in requests] == sizes
    for _n, count, ticks, per_tick, by_call in requests:
        positive(ticks)
        assert int(count) == 0 and float(per_tick) == 0, f"an idle rollout made API requests: {by_call}"
    assert "target: idle API requests per rollout per tick <= 0: measured 0 (the most of 10 and 20 rollouts) — met" in out
    assert f"(RSS with {operator_scale.TARGET_N} ModelRollouts < 500 MiB: not measured in this run" in out

    ratios = table(out.split("ratios against")[1], "rollouts")
    assert [int(r[0]) for r in ratios] == sizes[1:]
    for _n, times, *cells, per_extra in ratios:
        assert float(times) == operator_scale.QUICK_N / operator_scale.BASELINE_N
        for cell in cells:
            positive(cell)
        assert math.isfinite(float(per_extra))  # KiB per extra rollout: may be 0 or, by noise, below
    assert "machine: " in out


def test_promotion_latency_quick_run_prints_both_paths_and_the_ratio(
    capsys: pytest.CaptureFixture[str], mlflow_server: Any, prometheus_server: Any
) -> None:
    argv = ["--quick", "--mlflow-uri", mlflow_server.url, "--prometheus-url", prometheus_server.url]
    assert promotion_latency.main(argv) == 0
    out = capsys.readouterr().out

    rows = table(out, "path")
    assert [r[0] for r in rows] == list(promotion_latency.PATHS)
    for path, promotions, p50, worst, phase, isvc, comparator, comparator_max, call_ms in rows:
        assert int(promotions) == promotion_latency.QUICK_REPEATS
        assert positive(p50) <= positive(worst), path
        assert max(positive(phase), positive(isvc)) <= float(worst), path
        assert positive(comparator) <= positive(comparator_max), path
        positive(call_ms)
    by_path = {r[0]: r for r in rows}
    # The poll path is bounded by its interval (plus a reconcile); the webhook path by nothing of it.
    assert float(by_path["poll"][3]) < promotion_latency.QUICK_POLL_INTERVAL_S + 5

    (ratio_row,) = table(out, "ratio")
    assert ratio_row[0] == "webhook/poll"
    for cell in ratio_row[1:]:
        positive(cell)
    assert "every promotion, shadow s: poll: " in out and "machine: " in out

    # Shadow Ready -> mirroring live, per promotion: the operator is woken by the InferenceService's
    # change, so it is about a reconcile, not a tick (machine-dependent: the shape only).
    (ready_row,) = table(out, "promotions")
    assert ready_row[0] == "all" and len(ready_row[3].split(", ")) == 2 * promotion_latency.QUICK_REPEATS
    assert float(ready_row[1]) <= float(ready_row[2])
    assert "target: shadow InferenceService Ready -> mirroring live <= 1 s: measured " in out
