"""A tiny run of the decision-quality benchmark, and its simulation and threshold policy checked by hand."""

from __future__ import annotations

import math

import numpy as np

from benchmarks import decisions
from benchmarks.decisions import CHECKS, Case, Traffic, simulate, threshold_rollbacks


def test_quick_run_prints_the_table_for_every_case_and_share(capsys) -> None:
    assert decisions.main(["--quick", "--runs-aa", "20", "--runs-ab", "8"]) == 0
    out = capsys.readouterr().out
    assert "20 req/s total (Poisson), 30 s intervals" in out
    for share in ("canary share 5%", "canary share 10%"):
        assert share in out
    for case in decisions.cases(Traffic()):
        assert out.count(f"| {case.name.ljust(20)} |") == 2
    assert "- false rollbacks <= 1% on A/A:" in out
    assert "- p95 x1.5 at 10% caught within 2 intervals:" in out
    assert "machine: " in out


def test_simulated_windows_follow_the_stated_traffic() -> None:
    traffic = Traffic()
    w = simulate(Case("p95 x2", "latency", latency_scale=2.0), 0.10, traffic, runs=200, rng=np.random.default_rng(1))
    requests = w.requests.sum(axis=-1)
    assert abs(requests.mean() - 600) < 5  # 20 req/s x 30 s
    assert abs(w.requests[..., 0].sum() / requests.sum() - 0.10) < 0.005
    assert (w.buckets.sum(axis=-1) == w.requests).all()  # every request observed once
    assert abs(w.errors.sum() / w.requests.sum() - 0.01) < 0.002
    # The candidate is twice as slow: its median bucket sits above the baseline's.
    cumulative = w.buckets.sum(axis=(0, 1)).cumsum(axis=-1)
    median_bucket = (cumulative >= cumulative[:, -1:] / 2).argmax(axis=-1)
    assert median_bucket[0] > median_bucket[1]


def test_threshold_policy_counts_consecutive_failures_per_check() -> None:
    # One run, one check failing: fail, fail, inconclusive (keeps the count), pass (resets), fail.
    verdicts = np.zeros((1, 5, len(CHECKS)), dtype=int)
    verdicts[0, :, 0] = [1, 1, -1, 0, 1]
    assert threshold_rollbacks(verdicts, 1)[0] == 1
    assert threshold_rollbacks(verdicts, 2)[0] == 2
    assert math.isinf(threshold_rollbacks(verdicts, 3)[0])
    verdicts[0, :, 0] = [1, -1, 1, 1, 0]
    assert threshold_rollbacks(verdicts, 3)[0] == 4
    # Failures of different checks do not add up.
    verdicts = np.zeros((1, 4, len(CHECKS)), dtype=int)
    verdicts[0, :, 0] = [1, 0, 1, 0]
    verdicts[0, :, 1] = [0, 1, 0, 1]
    assert math.isinf(threshold_rollbacks(verdicts, 2)[0])
