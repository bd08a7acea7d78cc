"""The live decision benchmark's pure parts: its rollout specs, its schedule, and the trace-driven
replay's judges on windows built by hand (the live runs themselves: tests/integration)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.decisions_live import (
    CASES,
    JUDGES,
    PHASES,
    RunResult,
    Setting,
    Side,
    Window,
    accuracy_fails_per_window,
    deciding_check,
    load_traces,
    replay,
    rollout_spec,
    save_traces,
    schedule,
    sequential_verdict,
    threshold_failures,
    threshold_run,
)
from canary.decision.spec import parse_rollout
from canary.traffic.serving_metrics import BASELINE, CANARY, LATENCY_BUCKETS, SHADOW, STABLE


def side(median_s: float, requests: int = 200, errors: int = 0, correct_share: float = 0.9, seed: int = 0) -> Side:
    """A role's window: `requests` latencies around `median_s`, every request labelled."""
    rng = np.random.default_rng(seed)
    seconds = median_s * rng.lognormal(0.0, 0.2, size=requests)
    counts = np.bincount(np.searchsorted(LATENCY_BUCKETS, seconds, side="left"), minlength=len(LATENCY_BUCKETS) + 1)
    return Side(
        buckets=[float(c) for c in counts],
        requests=float(requests),
        errors=float(errors),
        labelled=float(requests),
        correct=float(round(requests * correct_share)),
    )


def shadow_window(candidate: Side, baseline: Side, stable: Side | None = None) -> Window:
    return Window("shadow", {SHADOW: candidate, BASELINE: baseline, STABLE: stable or baseline})


def test_every_setting_is_a_valid_rollout_judged_where_it_says() -> None:
    for judge in JUDGES:
        for phase in PHASES:
            setting = Setting(judge, phase)
            rollout = parse_rollout(rollout_spec(setting, "m"), setting.name)
            assert rollout.metadata.name == setting.rollout
            assert rollout.spec.shadow.enabled is (phase == "shadow")
            judges = {check.name: check.judge for check in rollout.spec.analysis.metrics}
            # Latency and errors by the setting's judge; accuracy sequentially in both, as in the README.
            assert judges["errors"] == judge and judges["accuracy"] == "sequential"
            assert judges["latency-p95" if judge == "threshold" else "latency"] == judge


def test_the_schedule_interleaves_every_case() -> None:
    cases = schedule(runs_aa=6, runs_regression=1)
    assert [c.name for c in cases].count("A/A identical retrain") == 3
    assert [c.name for c in cases].count("A/A same artifact") == 3
    assert {c.name for c in cases if c.expect} == {c.name for c in CASES[2:]}
    assert cases[2].expect is not None  # a regression after the first pair, not all at the end


def test_the_deciding_check_is_the_first_word_of_the_evidence() -> None:
    assert deciding_check("v3 is slower than v2: p95 12 ms vs 4 ms — latency-p95 0.012 vs stable 0.004") == "latency-p95"
    assert deciding_check("v3 promoted: alias 'champion' moved") is None


def test_identical_sides_are_never_rolled_back_in_replay() -> None:
    windows = [shadow_window(side(0.004, seed=i), side(0.004, seed=100 + i)) for i in range(20)]
    summary = replay(windows, "shadow", runs=100, seed=1)
    assert summary is not None and summary.pool == 20
    assert summary.sequential == 0 and summary.threshold == 0
    assert replay(windows, "canary", runs=10, seed=1) is None  # no canary windows recorded


@pytest.mark.parametrize(
    ("candidate", "sequential_check", "threshold_check"),
    [
        (side(0.010, seed=1), "latency", "latency-p95"),  # 2.5x slower
        (side(0.004, errors=20, seed=1), "errors", "errors"),  # 10% of requests failed
        (side(0.004, correct_share=0.6, seed=1), "accuracy", "accuracy"),  # 30 points worse
    ],
)
def test_each_regression_is_rolled_back_by_its_check(candidate: Side, sequential_check: str, threshold_check: str) -> None:
    window = shadow_window(candidate, side(0.004, seed=2))
    assert sequential_verdict([window]) == sequential_check
    summary = replay([window], "shadow", runs=20, seed=1)
    assert summary is not None and summary.sequential == 1 and summary.threshold == 1
    assert summary.sequential_by_check == {sequential_check: 20}
    assert summary.threshold_by_check == {threshold_check: 20}
    # Latency and errors by per-window thresholds; accuracy sequentially in the threshold setting too.
    assert threshold_failures(window) == ([] if threshold_check == "accuracy" else [threshold_check])
    assert summary.accuracy_per_window == (1 if threshold_check == "accuracy" else 0)


def test_latency_p95_rolls_back_only_on_three_failed_windows_in_a_row() -> None:
    # failureLimit 2, consecutive: a burst that doubles one window's p95 is not a regression.
    fast = shadow_window(side(0.004, seed=1), side(0.004, seed=2))
    slow = shadow_window(side(0.010, seed=1), side(0.004, seed=2))
    assert threshold_failures(fast) == [] and threshold_failures(slow) == ["latency-p95"]
    assert threshold_run([slow, slow, fast, slow, slow, fast, slow, slow]) is None
    assert threshold_run([slow, slow]) is None
    assert threshold_run([fast, slow, slow, slow]) == "latency-p95"
    # Too few requests to judge a p95 (noData: pass) resets the count like a pass.
    thin = shadow_window(side(0.010, requests=20, seed=1), side(0.004, requests=20, seed=2))
    assert threshold_failures(thin) == []
    assert threshold_run([slow, slow, thin, slow]) is None


def test_accuracy_compares_with_the_stable_not_the_baseline_server() -> None:
    # In the shadow phase latency and errors compare with the baseline server (same path as the
    # shadow's copies); accuracy with what the stable told its clients.
    # The candidate is as accurate as the stable (60%); the baseline server's labels would say 30 points worse.
    window = shadow_window(
        side(0.004, correct_share=0.6), side(0.004, correct_share=0.9), stable=side(0.004, correct_share=0.6)
    )
    assert sequential_verdict([window]) is None and threshold_failures(window) == []
    swapped = shadow_window(
        side(0.004, correct_share=0.6), side(0.004, correct_share=0.6), stable=side(0.004, correct_share=0.9)
    )
    assert sequential_verdict([swapped]) == "accuracy" and accuracy_fails_per_window(swapped)
    assert not accuracy_fails_per_window(window)
    canary = Window("canary", {CANARY: side(0.004), STABLE: side(0.004)})
    assert canary.latency_pair() == canary.accuracy_pair()


def test_traces_survive_a_round_trip(tmp_path) -> None:
    run = RunResult(
        setting="sequential/shadow", case="A/A identical retrain", version="2", outcome="Succeeded",
        rolled_back_in=None, check=None, seconds=31.5, client_failed=0, client_sent=600, message="promoted",
        windows=[shadow_window(side(0.004), side(0.004))],
    )  # fmt: skip
    path = tmp_path / "traces.json"
    save_traces(path, [run])
    assert load_traces(path) == [run]
