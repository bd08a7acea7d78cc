"""The install's alert rules (the PrometheusRule of manifests/) run through Prometheus' own promtool.

`promtool check rules` validates every rule and its annotations' templates; `promtool test rules`
feeds each alert series and checks that it fires when it should and only then. promtool comes with
Debian's prometheus package, which `make test` installs and `make test-fast` (tests/unit only)
does not: hence here, not with the rest of the manifest checks in tests/unit/test_manifests.py,
which also checks, without promtool, that the rules use only metrics the code exports.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_manifests import prometheus_rule


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: install Debian's prometheus package (`make prometheus`)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_alert_rules_are_valid_prometheus_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus_rule()["spec"]))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def quiet(at: str, alert: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def fires(at: str, alert: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": {"severity": severity, **labels}}]}


def case(inputs: list[dict[str, str]], checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"interval": "1m", "input_series": inputs, "alert_rule_test": checks}


OPERATOR_UP, COMPARATOR_UP = 'up{job="modelrollout-webhooks"}', 'up{job="modelrollout-comparator"}'
POLLS, POLL_ERRORS = "modelrollout_registry_poll_seconds_count", "modelrollout_registry_poll_errors_total"
ANALYSIS_ERRORS = "modelrollout_analysis_errors_total"
POLL_BUCKET = "modelrollout_registry_poll_seconds_bucket"
DROPPED = 'modelrollout_mirror_dropped_total{job="modelrollout-comparator",rollout="%s",model="%s"}'

# Series in, alerts out, evaluated by Prometheus' own rule engine (values: promtool's expanding
# notation, one sample a minute). Annotations are left out of the comparison: their text is
# checked by `promtool check rules` above.
ALERT_TESTS = [
    # No operator target at all: absent() fires.
    case([series(COMPARATOR_UP, "1x30")], [
        quiet("4m", "ModelRolloutOperatorDown"),
        fires("6m", "ModelRolloutOperatorDown", "critical"),
        quiet("20m", "ModelRolloutComparatorDown"),
    ]),
    # Targets failing their scrapes.
    case([series(OPERATOR_UP, "1x5 0x20"), series(COMPARATOR_UP, "0x30")], [
        quiet("5m", "ModelRolloutOperatorDown"),
        fires("12m", "ModelRolloutOperatorDown", "critical"),
        fires("12m", "ModelRolloutComparatorDown", "warning"),
    ]),
    # One rollback at minute 3; promotions alert nobody.
    case([
        series('modelrollout_transitions_total{to="RolledBack"}', "0 0 0 1x30"),
        series('modelrollout_transitions_total{to="Succeeded"}', "0+1x30"),
    ], [
        quiet("2m", "ModelRolloutRolledBack"),
        fires("4m", "ModelRolloutRolledBack", "warning"),
        quiet("20m", "ModelRolloutRolledBack"),
    ]),
    # A rollback that does not finish; a canary that lasts is fine.
    case([
        series('modelrollout_rollouts{phase="RollingBack"}', "0 1x30"),
        series('modelrollout_rollouts{phase="Canary"}', "3x30"),
        series('modelrollout_rollouts{phase="Promoting"}', "0x30"),
    ], [
        quiet("10m", "ModelRolloutStuck"),
        fires("17m", "ModelRolloutStuck", "critical", phase="RollingBack"),
    ]),
    case([series('modelrollout_rollouts{phase="Paused"}', "1x1600")], [
        quiet("23h", "ModelRolloutPausedTooLong"),
        fires("25h", "ModelRolloutPausedTooLong", "info"),
    ]),
    # Every poll fails; analysis queries fail too.
    case([series(POLL_ERRORS, "0+4x40"), series(POLLS, "0+4x40"), series(ANALYSIS_ERRORS, "0+2x40")], [
        quiet("8m", "ModelRolloutRegistryPollFailing"),
        fires("20m", "ModelRolloutRegistryPollFailing", "critical"),
        quiet("20m", "ModelRolloutRegistryPollStalled"),
        quiet("10m", "ModelRolloutAnalysisErrors"),
        fires("25m", "ModelRolloutAnalysisErrors", "warning"),
    ]),
    # Healthy: one poll error in a hundred, no analysis errors.
    case([series(POLL_ERRORS, "0x15 1x25"), series(POLLS, "0+4x40"), series(ANALYSIS_ERRORS, "0x40")], [
        quiet("30m", "ModelRolloutRegistryPollFailing"),
        quiet("30m", "ModelRolloutRegistryPollStalled"),
        quiet("30m", "ModelRolloutAnalysisErrors"),
    ]),
    # The poll stops.
    case([series(POLLS, "0+4x5 20x40")], [
        quiet("20m", "ModelRolloutRegistryPollStalled"),
        fires("30m", "ModelRolloutRegistryPollStalled", "critical"),
    ]),
    # Polls take 5-10 s: p95 about 9.75 s.
    case([
        series(f'{POLL_BUCKET}{{le="1.0"}}', "0x40"),
        series(f'{POLL_BUCKET}{{le="5.0"}}', "0x40"),
        series(f'{POLL_BUCKET}{{le="10.0"}}', "0+4x40"),
        series(f'{POLL_BUCKET}{{le="+Inf"}}', "0+4x40"),
    ], [
        quiet("10m", "ModelRolloutRegistryPollSlow"),
        fires("30m", "ModelRolloutRegistryPollSlow", "warning"),
    ]),
    # Polls under a second: no alert, however long.
    case([
        series(f'{POLL_BUCKET}{{le="1.0"}}', "0+4x40"),
        series(f'{POLL_BUCKET}{{le="5.0"}}', "0+4x40"),
        series(f'{POLL_BUCKET}{{le="+Inf"}}', "0+4x40"),
    ], [quiet("35m", "ModelRolloutRegistryPollSlow")]),
    # Only the rollout whose copies are dropped.
    case([series(DROPPED % ("iris", "iris"), "0+5x40"), series(DROPPED % ("wine", "wine"), "0x40")], [
        fires("25m", "ModelRolloutShadowWorkDropped", "info", rollout="iris"),
    ]),
]  # fmt: skip


def test_the_alerts_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    spec = prometheus_rule()["spec"]
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    tested = {case["alertname"] for t in ALERT_TESTS for case in t["alert_rule_test"]}
    assert tested == {r["alert"] for g in spec["groups"] for r in g["rules"]}, "every alert has a test"
    suite = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": ALERT_TESTS}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
