"""The quick modes of the benchmarks that start real processes: they run and print whole tables.

Each starts its own parts (model servers and a router; an `mlflow server`) on free loopback
ports and stops them before returning; the figures themselves are machine-dependent, so only
their shape is checked: every row there, every number positive and finite, nothing failed.
"""

from __future__ import annotations

import os
import re

import pytest

from benchmarks import comparator_capacity, decisions_live, registry_poll, router_overhead
from registry.connection import fail_fast_environment
from tests.fixtures.printed_tables import positive, table


def test_router_overhead_quick_run_prints_every_case_with_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    assert router_overhead.main(["--quick"]) == 0
    out = capsys.readouterr().out

    rows = table(out, "case")
    assert [r[0] for r in rows] == list(router_overhead.CASES)
    for name, p50, p99, per_second, requests, failed in rows:
        assert positive(p50) <= positive(p99), name
        positive(per_second)
        assert int(requests) > 0 and int(failed) == 0, name

    ratios = table(out.split("ratios against direct")[1], "case")
    assert [r[0] for r in ratios] == [f"{name}/direct" for name in router_overhead.CASES[1:]]
    for _name, p50, p99, per_second, _added in ratios:
        positive(p50), positive(p99), positive(per_second)

    mirror = re.search(r"(\d+) copies offered, (\d+) sent to the shadow \((\d+) failed there\), (\d+) dropped", out)
    assert mirror is not None, out
    offered, sent, failed, dropped = map(int, mirror.groups())
    assert offered > 0 and failed == 0 and sent + dropped == offered
    # The one-client load runs too, and every target of issue 15 is printed with its figure.
    assert "load: 1 closed-loop client(s)" in out
    assert_targets(out, 6)
    assert "machine: " in out


def assert_targets(out: str, count: int) -> None:
    """The `targets:` block (benchmarks/targets.py): `count` lines, each with a figure and a verdict."""
    block = out.split("\ntargets:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(block) == count, block
    for line in block:
        assert re.fullmatch(r"target: .+ (<=|>=|<) [0-9.e+-]+( ?[a-zA-Z]+)?: measured [0-9.e+-]+( ?[a-zA-Z]+)?( \(.+\))? — (met|NOT met)", line), line


def test_comparator_capacity_quick_run_prints_every_step_and_target(capsys: pytest.CaptureFixture[str]) -> None:
    own_cores = os.sched_getaffinity(0)
    assert comparator_capacity.main(["--quick"]) == 0
    assert os.sched_getaffinity(0) == own_cores  # the poster's pinning is undone
    out = capsys.readouterr().out

    rows = table(out, "replayed")
    assert [(r[0], int(r[1])) for r in rows] == [
        (f"{p}%", rate) for p, rates in comparator_capacity.RATES.items() for rate in rates[:2]
    ]
    for percent, _asked, reached, p50, p99, poster_p99, paired, replays, dropped, kept_up, cpu, core, rss, lag in rows:
        assert positive(p50) <= positive(p99)  # the probe's answer times
        positive(poster_p99), positive(reached), positive(cpu), positive(core), positive(rss), float(lag)
        # What the comparator paired it replayed its share of, dropped, or (a slow shadow) still had queued.
        assert 0 < int(replays) <= int(paired) and int(dropped) >= 0
        assert kept_up in ("yes", "NO")
        if percent == "100%" and kept_up == "yes":
            assert int(replays) == int(paired) and int(dropped) == 0
    assert_targets(out, 4)
    assert "machine: " in out


def test_registry_poll_quick_run_prints_every_size_with_ratios(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The benchmark sets MLflow's process-wide HTTP settings (registry.connection.connect):
    # registered here first, so they are restored for the tests that follow.
    for key, value in fail_fast_environment().items():
        monkeypatch.setenv(key, value)
    assert registry_poll.main(["--quick"]) == 0
    out = capsys.readouterr().out

    rows = table(out, "registered")
    assert [int(r[0]) for r in rows] == list(registry_poll.QUICK_SIZES)
    for registered, watched, p50, p95, calls, per_model, bare, poll_over_bare, setup in rows:
        assert watched == registered
        assert positive(p50) <= positive(p95)
        assert float(calls) == 1  # up to ~95 watched names: one filtered search per poll
        positive(per_model), positive(bare), positive(poll_over_bare), positive(setup)

    ratios = table(out.split("ratios against the")[1], "registered")
    assert [int(r[0]) for r in ratios] == list(registry_poll.QUICK_SIZES[1:])
    for _registered, models, total, per_model in ratios:
        positive(models), positive(total), positive(per_model)

    assert "GET /api/2.0/mlflow/registered-models/search" in out
    few = re.search(r"(\d+) watched of (\d+) registered: poll p50 ([\d.]+) ms .* listing the whole registry", out)
    assert few is not None and few.group(1, 2) == ("5", "50"), out
    assert "machine: " in out


def test_live_decisions_quick_run_decides_on_real_processes_and_replays_its_windows(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    traces = tmp_path / "traces.json"
    assert decisions_live.main(["--quick", "--traces", str(traces)]) == 0
    out = capsys.readouterr().out

    rows = {r[1]: r for r in table(out, "setting")}
    assert set(rows) == {"A/A identical retrain", "5% errors"}
    setting, _case, runs, rolled, where, _timing, clients, _measured = rows["5% errors"]
    assert setting == "threshold/shadow" and runs == "1"
    # Caught while a shadow, by the error check: no client ever saw it.
    assert rolled == "1 of 1" and where == "1× shadow (errors)", rows
    assert clients.startswith("0 of "), clients
    assert rows["A/A identical retrain"][3] == "0 of 1", rows  # an identical retrain promotes

    # Its windows were read back from Prometheus and replayed in both phases.
    replayed = table(out, "phase")
    assert [(r[0], int(r[1])) for r in replayed] == [("shadow", 3), ("shadow", 10), ("canary", 3), ("canary", 10)]
    for phase, _looks, pool, *_ in replayed:
        assert int(pool) >= 1, phase
    recorded = decisions_live.load_traces(traces)
    aa = next(r for r in recorded if r.case == "A/A identical retrain")
    shadow = [w for w in aa.windows if w.phase == "shadow"]
    assert shadow and all(w.sides["shadow"].requests > 0 and w.sides["baseline"].requests > 0 for w in shadow)
    assert "- live A/A: 0 of 1 runs rolled back" in out and "machine: " in out
