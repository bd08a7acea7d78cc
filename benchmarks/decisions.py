"""Decision-quality benchmark: the sequential judge against a Flagger-style threshold policy.

    python -m benchmarks.decisions            # the full run (about a minute on 2 cores)
    python -m benchmarks.decisions --quick    # a few seconds, for the smoke test

Simulated traffic (stated once here and printed with the results):
- 20 requests/s in total, Poisson arrivals, 30 s analysis intervals (about 600 requests each), a
  fixed canary share of 5% or 10% (about 30 or 60 canary requests per interval); a horizon of 10
  intervals (5 minutes): a regression not rolled back by then is "missed".
- Latency: lognormal per request, median 40 ms and sigma 0.5 (p95 91 ms), observed into the
  local router's Prometheus buckets (`canary.traffic.serving_metrics.LATENCY_BUCKETS`). Errors: 1% of
  requests. Accuracy: 90%, every request labelled (no label lag).
- Cases: A/A (identical versions); latency x1.2 / x1.5 / x2 (every request that much slower, so
  p95 too); "p95 x1.5, tail only" (median unchanged, sigma widened until p95 is x1.5: the
  regression a rank test is weakest on, kept in to be honest); accuracy -2 / -5 points; error
  rate +1 point.

Both policies see the SAME simulated windows and run the same three checks (latency, error
rate, accuracy) every interval; a rollback by any check ends the run. Tolerances are the same
for both and set, before any run, at half the smallest regression the issue asks to catch:
latency 10% (the smallest case is x1.2), errors +0.5 point (case +1), accuracy -1 point (case -2).

- Judge: `canary.decision.sequential` on the data accumulated since the step began, re-judged every
  interval; rolled back at its first `fail`. A `pass` is recorded but does not stop the run (in
  a rollout the next step would keep judging), so its false-rollback rate is over all 10 looks.
- Threshold (Flagger-style): each interval, each check on THAT interval's window, as a
  Prometheus query would see it: p95 by histogram_quantile over the window's buckets must be
  <= stable p95 x 1.1; error rate <= stable + 0.5 point; accuracy >= stable - 1 point; fewer
  than 10 requests per version (the engine's minSamples) is inconclusive. Rolled back when one
  check fails k consecutive intervals (a pass resets the count, inconclusive does not: the
  engine's `failureLimit: k-1, consecutive: true`). k=1 is the engine's default; k* is the
  smallest k whose A/A false-rollback rate is at most the judge's, the fair comparison "at an
  equal or lower false-rollback rate" (Flagger's docs use a threshold of 5-10 failed checks).

Detection time is in intervals (1 = rolled back at the end of the first), median and p95 over
all runs, a missed run counting as never (shown ">10").
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from canary.decision.samples import Counts, Histogram, histogram_quantile
from canary.decision.sequential import judge_latency, judge_rate
from canary.traffic.serving_metrics import LATENCY_BUCKETS

BOUNDS: tuple[float, ...] = tuple(LATENCY_BUCKETS)
CHECKS = ("latency", "errors", "accuracy")
CANDIDATE, BASELINE = 0, 1
_Z95 = 1.6448536269514722
MAX_K = 10


@dataclass(frozen=True)
class Traffic:
    requests_per_second: float = 20.0
    interval_seconds: float = 30.0
    horizon: int = 10
    latency_median: float = 0.040
    latency_sigma: float = 0.5
    error_rate: float = 0.01
    accuracy: float = 0.90

    def describe(self) -> str:
        p95 = self.latency_median * math.exp(_Z95 * self.latency_sigma)
        return (
            f"{self.requests_per_second:g} req/s total (Poisson), {self.interval_seconds:g} s intervals "
            f"(~{self.requests_per_second * self.interval_seconds:.0f} requests), horizon {self.horizon} intervals; "
            f"latency lognormal p50 {self.latency_median * 1000:g} ms sigma {self.latency_sigma:g} "
            f"(p95 {p95 * 1000:.0f} ms) in the router's {len(BOUNDS)} buckets; errors {self.error_rate:.0%}; "
            f"accuracy {self.accuracy:.0%}, every request labelled"
        )


@dataclass(frozen=True)
class Tolerances:
    latency_slowdown: float = 0.10
    error_points: float = 0.005
    accuracy_points: float = 0.01


@dataclass(frozen=True)
class Case:
    name: str
    regressed: str | None = None  # the check that should catch it
    latency_scale: float = 1.0
    latency_sigma: float | None = None  # the candidate's sigma, when only the tail moves
    error_delta: float = 0.0
    accuracy_delta: float = 0.0


def cases(traffic: Traffic) -> list[Case]:
    tail_sigma = traffic.latency_sigma + math.log(1.5) / _Z95
    return [
        Case("A/A"),
        Case("p95 x1.2", "latency", latency_scale=1.2),
        Case("p95 x1.5", "latency", latency_scale=1.5),
        Case("p95 x2", "latency", latency_scale=2.0),
        Case("p95 x1.5 tail only", "latency", latency_sigma=tail_sigma),
        Case("accuracy -2 pts", "accuracy", accuracy_delta=-0.02),
        Case("accuracy -5 pts", "accuracy", accuracy_delta=-0.05),
        Case("errors +1 pt", "errors", error_delta=0.01),
    ]


@dataclass(frozen=True)
class Windows:
    """Per run, interval and version (candidate 0, baseline 1): what Prometheus would have counted."""

    buckets: np.ndarray  # (runs, horizon, 2, len(BOUNDS) + 1) per-bucket counts
    requests: np.ndarray  # (runs, horizon, 2)
    errors: np.ndarray
    correct: np.ndarray


def simulate(case: Case, share: float, traffic: Traffic, runs: int, rng: np.random.Generator) -> Windows:
    horizon = traffic.horizon
    total = rng.poisson(traffic.requests_per_second * traffic.interval_seconds, size=(runs, horizon))
    canary = rng.binomial(total, share)
    requests = np.stack([canary, total - canary], axis=-1)
    mu = math.log(traffic.latency_median)
    buckets = np.zeros((runs, horizon, 2, len(BOUNDS) + 1))
    for version in (CANDIDATE, BASELINE):
        n = requests[:, :, version].ravel()
        sigma = traffic.latency_sigma
        scale = 1.0
        if version == CANDIDATE:
            sigma = case.latency_sigma if case.latency_sigma is not None else sigma
            scale = case.latency_scale
        seconds = scale * rng.lognormal(mu, sigma, size=int(n.sum()))
        # Prometheus puts an observation in the first bucket whose `le` it does not exceed.
        bucket = np.searchsorted(BOUNDS, seconds, side="left")
        owner = np.repeat(np.arange(n.size), n)
        flat = np.bincount(owner * (len(BOUNDS) + 1) + bucket, minlength=n.size * (len(BOUNDS) + 1))
        buckets[:, :, version, :] = flat.reshape(runs, horizon, len(BOUNDS) + 1)
    error_p = np.array([traffic.error_rate + case.error_delta, traffic.error_rate])
    accuracy_p = np.array([traffic.accuracy + case.accuracy_delta, traffic.accuracy])
    errors = rng.binomial(requests, error_p)
    correct = rng.binomial(requests, accuracy_p)
    return Windows(buckets=buckets, requests=requests, errors=errors, correct=correct)


@dataclass
class JudgeRuns:
    rollback: np.ndarray  # (runs,) interval of the first fail, inf if none
    first_pass: dict[str, np.ndarray]  # per check and "all": interval of the first pass, inf if none
    passed_before_fail: np.ndarray  # (runs,) the regressed check passed before any rollback


def run_judge(w: Windows, tol: Tolerances, confidence: float, regressed: str | None) -> JudgeRuns:
    runs, horizon = w.requests.shape[:2]
    rollback = np.full(runs, math.inf)
    first_pass = {name: np.full(runs, math.inf) for name in (*CHECKS, "all")}
    wrong_pass = np.zeros(runs, dtype=bool)
    buckets = np.cumsum(w.buckets, axis=1)
    requests, errors, correct = (np.cumsum(a, axis=1) for a in (w.requests, w.errors, w.correct))
    for r in range(runs):
        for t in range(horizon):
            n_c, n_b = float(requests[r, t, CANDIDATE]), float(requests[r, t, BASELINE])
            outcomes = {
                "latency": judge_latency(
                    Histogram(BOUNDS, tuple(buckets[r, t, CANDIDATE])),
                    Histogram(BOUNDS, tuple(buckets[r, t, BASELINE])),
                    tolerated_slowdown=tol.latency_slowdown,
                    confidence=confidence,
                ).outcome,
                "errors": judge_rate(
                    Counts(float(errors[r, t, CANDIDATE]), n_c),
                    Counts(float(errors[r, t, BASELINE]), n_b),
                    worse="higher",
                    tolerance=tol.error_points,
                    confidence=confidence,
                ).outcome,
                "accuracy": judge_rate(
                    Counts(float(correct[r, t, CANDIDATE]), n_c),
                    Counts(float(correct[r, t, BASELINE]), n_b),
                    worse="lower",
                    tolerance=tol.accuracy_points,
                    confidence=confidence,
                ).outcome,
            }
            for name, outcome in outcomes.items():
                if outcome == "pass" and first_pass[name][r] == math.inf:
                    first_pass[name][r] = t + 1
                    if name == regressed:
                        wrong_pass[r] = True
            if all(o == "pass" for o in outcomes.values()) and first_pass["all"][r] == math.inf:
                first_pass["all"][r] = t + 1
            if any(o == "fail" for o in outcomes.values()):
                rollback[r] = t + 1
                break
    return JudgeRuns(rollback=rollback, first_pass=first_pass, passed_before_fail=wrong_pass)


def threshold_verdicts(w: Windows, tol: Tolerances, min_samples: int = 10) -> np.ndarray:
    """(runs, horizon, checks): 1 fail, 0 pass, -1 inconclusive, each on its own interval's window."""
    runs, horizon = w.requests.shape[:2]
    out = np.zeros((runs, horizon, len(CHECKS)), dtype=int)
    for r in range(runs):
        for t in range(horizon):
            n_c, n_b = w.requests[r, t, CANDIDATE], w.requests[r, t, BASELINE]
            if n_c < min_samples or n_b < min_samples:
                out[r, t, :] = -1
                continue
            p95_c = histogram_quantile(Histogram(BOUNDS, tuple(w.buckets[r, t, CANDIDATE])), 0.95)
            p95_b = histogram_quantile(Histogram(BOUNDS, tuple(w.buckets[r, t, BASELINE])), 0.95)
            out[r, t, 0] = p95_c > p95_b * (1 + tol.latency_slowdown)
            out[r, t, 1] = w.errors[r, t, CANDIDATE] / n_c > w.errors[r, t, BASELINE] / n_b + tol.error_points
            out[r, t, 2] = w.correct[r, t, CANDIDATE] / n_c < w.correct[r, t, BASELINE] / n_b - tol.accuracy_points
    return out


def threshold_rollbacks(verdicts: np.ndarray, k: int) -> np.ndarray:
    """Interval of the rollback under "k consecutive failures of one check", inf if none."""
    runs, horizon, checks = verdicts.shape
    rollback = np.full(runs, math.inf)
    streak = np.zeros((runs, checks), dtype=int)
    for t in range(horizon):
        v = verdicts[:, t, :]
        streak = np.where(v == 1, streak + 1, np.where(v == 0, 0, streak))
        hit = (streak >= k).any(axis=1) & (rollback == math.inf)
        rollback[hit] = t + 1
    return rollback


@dataclass(frozen=True)
class Summary:
    rolled_back: float  # share of runs rolled back within the horizon
    median: float  # detection interval, inf when the median run was not rolled back
    p95: float
    within_2: float  # share of runs rolled back by the end of interval 2

    def cell(self) -> str:
        return f"{self.rolled_back:6.1%}  {_interval(self.median):>3}/{_interval(self.p95):<3}"


def summarise(rollback: np.ndarray) -> Summary:
    return Summary(
        rolled_back=float(np.mean(np.isfinite(rollback))),
        median=float(np.quantile(rollback, 0.5, method="inverted_cdf")),
        p95=float(np.quantile(rollback, 0.95, method="inverted_cdf")),
        within_2=float(np.mean(rollback <= 2)),
    )


def _interval(x: float) -> str:
    return ">10" if not math.isfinite(x) else f"{x:.0f}"


@dataclass
class CaseResult:
    case: Case
    judge: dict[float, Summary]  # per confidence
    wrong_pass: dict[float, float]
    threshold: dict[int, Summary]  # per k
    aa_pass: dict[str, Summary] = field(default_factory=dict)  # A/A only: time to the judge's first pass


@dataclass
class ShareResult:
    share: float
    results: list[CaseResult]
    matched_k: int | None  # smallest k whose A/A false rollbacks <= the judge's (at the first confidence)


@dataclass(frozen=True)
class Config:
    runs_aa: int = 1000
    runs_ab: int = 400
    shares: tuple[float, ...] = (0.05, 0.10)
    confidences: tuple[float, ...] = (0.95, 0.99)
    seed: int = 20240604
    traffic: Traffic = Traffic()
    tolerances: Tolerances = Tolerances()


def run(config: Config) -> list[ShareResult]:
    out = []
    for share in config.shares:
        results = []
        for index, case in enumerate(cases(config.traffic)):
            runs = config.runs_aa if case.regressed is None else config.runs_ab
            # One stream per (share, case): every policy judges the very same windows.
            rng = np.random.default_rng([config.seed, round(share * 1000), index])
            windows = simulate(case, share, config.traffic, runs, rng)
            judged = {c: run_judge(windows, config.tolerances, c, case.regressed) for c in config.confidences}
            verdicts = threshold_verdicts(windows, config.tolerances)
            result = CaseResult(
                case=case,
                judge={c: summarise(j.rollback) for c, j in judged.items()},
                wrong_pass={c: float(np.mean(j.passed_before_fail)) for c, j in judged.items()},
                threshold={k: summarise(threshold_rollbacks(verdicts, k)) for k in range(1, MAX_K + 1)},
            )
            if case.regressed is None:
                first = judged[config.confidences[0]]
                result.aa_pass = {name: summarise(times) for name, times in first.first_pass.items()}
            results.append(result)
        aa = results[0]
        judge_fr = aa.judge[config.confidences[0]].rolled_back
        matched = next((k for k in range(1, MAX_K + 1) if aa.threshold[k].rolled_back <= judge_fr), None)
        out.append(ShareResult(share=share, results=results, matched_k=matched))
    return out


def _ratio(a: float, b: float) -> str:
    if not math.isfinite(a) and not math.isfinite(b):
        return "  -  "
    if not math.isfinite(b):
        return " <1  "  # the threshold never caught it within the horizon
    if not math.isfinite(a):
        return " >1  "
    return f"{a / b:5.2f}"


def render(config: Config, shares: list[ShareResult], seconds: float) -> str:
    lines = [
        "Decision-quality benchmark (python -m benchmarks.decisions)",
        f"traffic: {config.traffic.describe()}",
        (
            f"tolerances (both policies): latency +{config.tolerances.latency_slowdown:.0%}, "
            f"errors +{config.tolerances.error_points * 100:g} pt, "
            f"accuracy -{config.tolerances.accuracy_points * 100:g} pt; "
            f"runs: {config.runs_aa} A/A, {config.runs_ab} per regression; seed {config.seed}"
        ),
        (
            "cell = rolled back within the horizon (A/A: false rollbacks; otherwise caught), "
            "detection interval median/p95 (>10 = not caught)"
        ),
        "",
    ]
    first_conf = config.confidences[0]
    for sr in shares:
        k_star = sr.matched_k
        ks = [1, 3] + ([k_star] if k_star not in (None, 1, 3) else [])
        head = ["case".ljust(20)]
        head += [f"judge {c:.0%}".ljust(17) for c in config.confidences]
        head += [f"threshold k={k}".ljust(17) for k in ks]
        head += [f"wrong pass {first_conf:.0%}", f"median ratio judge/k={k_star}"]
        lines.append(f"canary share {sr.share:.0%} (k* = {k_star if k_star is not None else f'none <= {MAX_K}'})")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
        for cr in sr.results:
            row = [cr.case.name.ljust(20)]
            row += [cr.judge[c].cell().ljust(17) for c in config.confidences]
            row += [cr.threshold[k].cell().ljust(17) for k in ks]
            row.append(f"{cr.wrong_pass[first_conf]:.1%}".ljust(len(head[len(row)])))
            if cr.case.regressed is None or k_star is None:
                ratio = "-"
            else:
                ratio = _ratio(cr.judge[first_conf].median, cr.threshold[k_star].median).strip()
            row.append(ratio.ljust(len(head[-1])))
            lines.append("| " + " | ".join(row) + " |")
        aa = sr.results[0]
        passes = ", ".join(f"{name} {_interval(s.median)}" for name, s in aa.aa_pass.items())
        lines.append(f"A/A: judge's first pass, median interval: {passes}")
        if k_star is not None:
            fr_j, fr_t = aa.judge[first_conf].rolled_back, aa.threshold[k_star].rolled_back
            ratio = "-" if fr_t == 0 else f"{fr_j / fr_t:.2f}"
            lines.append(
                f"false-rollback ratio judge/k={k_star}: {ratio} ({fr_j:.1%} vs {fr_t:.1%}); "
                f"k=1: {aa.threshold[1].rolled_back:.1%}"
            )
        lines.append("")
    lines += targets(config, shares)
    lines.append("")
    lines.append(
        f"machine: {platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}, "
        f"numpy {np.__version__}; took {seconds:.0f} s"
    )
    return "\n".join(lines)


def targets(config: Config, shares: list[ShareResult]) -> list[str]:
    conf = config.confidences[0]
    out = [f"targets (judge at confidence {conf:.0%}):"]
    worst_fr = max(sr.results[0].judge[conf].rolled_back for sr in shares)
    out.append(f"- false rollbacks <= 1% on A/A: {worst_fr:.1%} at worst -> {'met' if worst_fr <= 0.01 else 'NOT met'}")
    ten = next((sr for sr in shares if abs(sr.share - 0.10) < 1e-9), None)
    x15 = next((cr for cr in ten.results if cr.case.name == "p95 x1.5"), None) if ten else None
    if x15 is not None:
        s = x15.judge[conf]
        ok = s.p95 <= 2
        out.append(
            f"- p95 x1.5 at 10% caught within 2 intervals: {s.within_2:.1%} of runs by interval 2 "
            f"(median {_interval(s.median)}, p95 {_interval(s.p95)}) -> {'met' if ok else 'NOT met'} (judged on the p95 run)"
        )
    for sr in shares:
        k = sr.matched_k
        if k is None:
            out.append(f"- {sr.share:.0%}: no threshold k <= {MAX_K} is as careful as the judge on A/A")
            continue
        faster, slower, ties, neither = [], [], [], []
        for cr in sr.results[1:]:
            j, t = cr.judge[conf], cr.threshold[k]
            if not math.isfinite(j.median) and not math.isfinite(t.median):
                # Neither policy catches the median run: "faster" has no meaning; show how often each did.
                neither.append(f"{cr.case.name} {j.rolled_back:.1%} vs {t.rolled_back:.1%}")
                continue
            key, other = (j.median, -j.rolled_back), (t.median, -t.rolled_back)
            (faster if key < other else slower if key > other else ties).append(cr.case.name)
        verdict = "met" if not slower else "NOT met for " + ", ".join(slower)
        out.append(
            f"- {sr.share:.0%}: faster than threshold k={k} (A/A {sr.results[0].threshold[k].rolled_back:.1%} false "
            f"rollbacks vs judge {sr.results[0].judge[conf].rolled_back:.1%}) on {len(faster)} of "
            f"{len(faster) + len(slower) + len(ties)} regressions either catches in the median run "
            f"(tied: {', '.join(ties) or 'none'}) -> {verdict}; caught by neither in the median run, "
            f"judge vs threshold: {'; '.join(neither) or 'none'}"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decisions", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few runs per case: seconds, for smoke tests")
    parser.add_argument("--runs-aa", type=int, help="A/A runs per share (default 1000; quick 60)")
    parser.add_argument("--runs-ab", type=int, help="runs per regression case and share (default 400; quick 30)")
    parser.add_argument("--seed", type=int, default=Config.seed)
    args = parser.parse_args(argv)
    runs_aa = args.runs_aa or (60 if args.quick else Config.runs_aa)
    runs_ab = args.runs_ab or (30 if args.quick else Config.runs_ab)
    if runs_aa < 1 or runs_ab < 1:
        parser.error("runs must be at least 1")
    config = Config(runs_aa=runs_aa, runs_ab=runs_ab, seed=args.seed)
    started = time.perf_counter()
    shares = run(config)
    print(render(config, shares, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
