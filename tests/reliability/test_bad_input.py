"""The catalogue of bad input: what can be wrong, where it enters, what the project answers, and
what is left as it was.

Each table below is one kind of input; each row is (what is bad, the answer a user or a sender
gets), and its test sends the row through the real entry point:

1. SPEC_ROWS - every field of the ModelRollout spec (derived from canary/decision/spec.py: a field without
   a row fails `test_every_spec_field_has_a_row`) with an invalid value: `modelrollout lint` and
   `modelrollout local run` answer one line naming the field, exit 2, and the local state is
   untouched; the operator's reader raises the same message, which it writes into the rollout's
   `SpecValid=False` condition (end to end: tests/e2e/test_operator.py::
   test_an_invalid_spec_is_reported_and_the_state_kept).
2. YAML_ROWS - rollout files that are not YAML, or not ModelRollouts: one line naming the file and
   where it broke (tests/integration/test_cli.py has more of the CLI's errors).
3. QUERY_ROWS - analysis queries the session's real Prometheus cannot run, or templates whose
   variables cannot be filled: `local run`'s pre-flight names those it can see before anything
   starts; a controller that runs them anyway (the operator has no pre-flight) records an `error`
   verdict naming the cause in the check's status and an AnalysisError event, and the rollout
   holds its step: nothing else in its persisted status changes. A query with an unknown
   `{{ variable }}` never gets that far: the spec refuses it (SPEC_ROWS, `query`).
4. Registry rows - an alias on a deleted version and an artifact that fails to load, on the local
   platform with the session's MLflow: a rollback whose reason names the cause, the stable alias
   untouched, the stable still serving (deeper: tests/integration/test_runner_failures.py).
5. PAYLOAD_ROWS - inference requests through the real router and the real KServe model server:
   400/404/413 with a message, never a 5xx, never counted as the version's error, and the next
   good request is answered (deeper: tests/integration/test_modelserver.py, test_router.py,
   tests/reliability/test_fuzz_parsing.py).
6. WEBHOOK_ROWS - forged, tampered, stale, replayed and malformed MLflow webhook deliveries through
   the operator's real HTTP server: 400/401/413, or 200 "duplicate" for a replay (MLflow never
   retries a 4xx, and its own retries reuse the delivery id); nothing reaches the handler, and a
   rejected delivery does not use up its id (deeper: tests/unit/test_webhooks.py,
   tests/integration/test_webhooks_mlflow.py).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import time
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from typer.testing import CliRunner

from canary.decision.spec import ModelRollout, Phase, RolloutStatus, SpecError, parse_rollout
from canary.traffic import router as router_module
from controller.cli.main import app
from controller.kube.operator_http import HttpServer, create_app
from controller.kube.rollout_resource import read as read_resource
from controller.local import modelserver
from controller.local.home import LocalHome, Services
from controller.local.runner import LocalRunner, PreflightProblem
from controller.local.state import StateStore
from registry.artifacts import resolve_artifact_uri
from registry.connection import fail_fast_environment
from registry.webhooks import WEBHOOK_PATH, WebhookEvent, sign
from tests.fixtures.faults import tick_all_until, tick_until
from tests.fixtures.mlflow import TEST_EXPERIMENT
from tests.fixtures.modelserver import REPO, Process, fit_logistic, save_sklearn, spawn

if TYPE_CHECKING:
    import mlflow

cli = CliRunner()
# A row's bad value is "the key is missing" when it is this.
DELETE = object()
READY_TIMEOUT_S = 90.0  # model servers on two cores shared with other test runs
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def invoke(*args: Any):
    return cli.invoke(app, [str(a) for a in args])


def one_line_error(result: Any) -> str:
    """The CLI's answer to bad input: exit 2 and exactly one line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def keep_mlflow_env(patch: pytest.MonkeyPatch) -> None:
    """A LocalRunner sets MLflow's process-wide HTTP settings (registry.connection.connect) to its
    own: record the session's in `patch`, so its undo() puts them back for the other tests."""
    for key in fail_fast_environment():
        if key in os.environ:
            patch.setenv(key, os.environ[key])
        else:
            patch.delenv(key, raising=False)


# =================================================================================================
# 1. The rollout spec: every field
# =================================================================================================

# Every optional section is present, so each row only has to break its own field.
BASE: dict[str, Any] = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelRollout",
    "metadata": {"name": "table", "namespace": "default", "labels": {"team": "ml"}, "annotations": {"note": "x"}},
    "spec": {
        "model": {"name": "iris", "candidateAlias": "challenger", "stableAlias": "champion", "candidateStage": "Staging"},
        "target": {
            "inferenceService": "iris",
            "deploymentMode": "Knative",
            "predictor": {
                "runtime": "kserve-mlserver",
                "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "2Gi"}},
                "serviceAccountName": "models",
            },
        },
        "shadow": {
            "enabled": True,
            "duration": "30s",
            "percent": 100,
            "comparison": {"relativeTolerance": 0.01, "absoluteTolerance": 0.001},
        },
        "canary": {"steps": [10, 50], "interval": "30s"},
        "analysis": {
            "provider": "local",
            "metrics": [
                {
                    "name": "p95",
                    "template": "latency_p95",
                    "judge": "threshold",
                    "max": 0.5,
                    "failureLimit": 1,
                    "consecutive": True,
                    "noData": "inconclusive",
                    "minSamples": 10,
                    "phases": ["canary"],
                }
            ],
        },
        "progressDeadline": "5m",
        "gate": {"metrics": [{"name": "accuracy", "min": 0.9, "missing": "fail"}], "missing": "fail"},
        "postPromotion": {"watch": "1m"},
    },
}
METRIC = BASE["spec"]["analysis"]["metrics"][0]
GATE_METRIC = BASE["spec"]["gate"]["metrics"][0]


@dataclass(frozen=True)
class SpecRow:
    """`field` (wire names; `[]` is the list's first item) set to `value`; the one-line error holds
    every fragment of `says`. `also` sets other fields first, where the bad value needs a context."""

    field: str
    value: Any
    says: tuple[str, ...]
    also: tuple[tuple[str, Any], ...] = ()


def row(field: str, value: Any, *says: str, also: tuple[tuple[str, Any], ...] = ()) -> SpecRow:
    return SpecRow(field, value, says, also)


M = "spec.analysis.metrics[]"
G = "spec.gate.metrics[]"
SPEC_ROWS: list[SpecRow] = [
    row("apiVersion", "modelrollout.io/v1", "apiVersion", "'modelrollout.io/v1alpha1'", "got 'modelrollout.io/v1'"),
    row("kind", "Rollout", "kind", "'ModelRollout'", "got 'Rollout'"),
    row("metadata", "table", "metadata", "valid dictionary"),
    row("metadata.name", "Table_1", "metadata.name", "invalid name 'Table_1'", "lower-case"),
    row("metadata.namespace", 7, "metadata.namespace", "valid string"),
    row("metadata.labels", {"team": 1}, "metadata.labels.team", "valid string"),
    row("metadata.annotations", ["x"], "metadata.annotations", "valid dictionary"),
    row("spec", DELETE, "spec", "Field required"),
    row("spec.model", DELETE, "spec.model", "Field required"),
    row("spec.model.name", "", "spec.model.name", "at least 1 character"),
    row("spec.model.candidateAlias", "latest", "spec.model", "alias 'latest' is reserved by MLflow"),
    row("spec.model.stableAlias", "challenger", "spec.model", "candidateAlias and stableAlias are both 'challenger'"),
    row("spec.model.candidateStage", 3, "spec.model.candidateStage", "valid string"),
    row("spec.target", "iris", "spec.target", "valid dictionary"),
    row("spec.target.inferenceService", "Iris_Model", "spec.target.inferenceService", "invalid InferenceService name 'Iris_Model'"),
    # KServe's old name for the mode: the error lists the names it has now.
    row("spec.target.deploymentMode", "Serverless", "spec.target.deploymentMode", "'Knative' or 'Standard'", "got 'Serverless'"),
    row("spec.target.httpRoute", "Iris_Route", "spec.target.httpRoute", "invalid HTTPRoute name 'Iris_Route'", also=(("spec.target.deploymentMode", "Standard"),)),
    row("spec.target.predictor", ["x"], "spec.target.predictor", "valid dictionary"),
    row("spec.target.predictor.runtime", "KServe MLServer", "spec.target.predictor.runtime", "invalid runtime name 'KServe MLServer'"),
    row("spec.target.predictor.resources", "big", "spec.target.predictor.resources", "valid dictionary"),
    row("spec.target.predictor.resources.requests", {"cpu": "lots"}, "resources.requests.cpu", "invalid quantity 'lots'"),
    row("spec.target.predictor.resources.limits", {"GPU!": 1}, "resources.limits", "invalid resource name 'GPU!'"),
    row("spec.target.predictor.serviceAccountName", "Models_SA", "serviceAccountName", "invalid service account name 'Models_SA'"),
    row("spec.shadow", "on", "spec.shadow", "valid dictionary"),
    row("spec.shadow.enabled", "sometimes", "spec.shadow.enabled", "valid boolean"),
    row("spec.shadow.duration", "5 minutes", "spec.shadow.duration", "invalid duration '5 minutes'", "'30s'"),
    row("spec.shadow.percent", 0, "spec.shadow.percent", "greater than or equal to 1"),
    row("spec.shadow.comparison", "strict", "spec.shadow.comparison", "valid dictionary"),
    row("spec.shadow.comparison.relativeTolerance", -0.1, "relativeTolerance", "expected a finite number >= 0, got -0.1"),
    row("spec.shadow.comparison.absoluteTolerance", "tiny", "absoluteTolerance", "expected a number, got the string 'tiny'"),
    row("spec.canary", [10, 50], "spec.canary", "valid dictionary"),
    row("spec.canary.steps", [50, 10], "spec.canary.steps", "steps must increase: step 1 (10%) is not above step 0 (50%)"),
    row("spec.canary.interval", "soon", "spec.canary.interval", "invalid duration 'soon'"),
    row("spec.analysis", "p95", "spec.analysis", "valid dictionary"),
    row("spec.analysis.provider", "datadog", "spec.analysis", "unknown provider 'datadog'"),
    row("spec.analysis.metrics", [METRIC, METRIC], "spec.analysis", "metric name 'p95' appears twice"),
    row(f"{M}.name", "", "spec.analysis.metrics.0.name", "at least 1 character"),
    row(f"{M}.template", "latency_p42", "spec.analysis", "metric 'p95'", "latency_p42"),
    row(
        f"{M}.query", 'sum(rate(modelrollout_requests_total{model="{{ model_name }}"}[1m]))',
        "spec.analysis.metrics.0", "unknown variable(s) model_name in query", "known: rollout, model",
        also=((f"{M}.template", DELETE),),
    ),  # fmt: skip
    row(f"{M}.samplesQuery", "sum(x)", "spec.analysis.metrics.0", "samplesQuery goes with a custom query", "counts its own samples"),
    row(f"{M}.judge", "bayesian", "spec.analysis.metrics.0.judge", "'threshold' or 'sequential'", "got 'bayesian'"),
    row(f"{M}.max", "high", "spec.analysis.metrics.0.max", "valid number"),
    row(f"{M}.min", 0.9, "spec.analysis.metrics.0", "min (0.9) is above max (0.5)"),
    row(f"{M}.maxIncrease", "lots", "spec.analysis.metrics.0.maxIncrease", "invalid relative threshold 'lots'", "'10%'"),
    row(f"{M}.maxDecrease", -0.1, "spec.analysis.metrics.0.maxDecrease", "must be a finite, non-negative number"),
    row(f"{M}.tolerance", True, "spec.analysis.metrics.0.tolerance", "not true/false"),
    row(f"{M}.confidence", 1.5, "spec.analysis.metrics.0.confidence", "less than 1"),
    row(f"{M}.maxIntervals", 0, "spec.analysis.metrics.0.maxIntervals", "greater than or equal to 1"),
    row(f"{M}.failureLimit", -1, "spec.analysis.metrics.0.failureLimit", "greater than or equal to 0"),
    row(f"{M}.consecutive", "often", "spec.analysis.metrics.0.consecutive", "valid boolean"),
    row(f"{M}.noData", "ignore", "spec.analysis.metrics.0.noData", "'fail', 'inconclusive' or 'pass'", "got 'ignore'"),
    row(f"{M}.minSamples", -5, "spec.analysis.metrics.0.minSamples", "greater than or equal to 0"),
    row(f"{M}.phases", ["rollout"], "spec.analysis.metrics.0.phases.0", "'shadow' or 'canary'", "got 'rollout'"),
    # Shorter than the canary interval, so no step could ever finish.
    row("spec.progressDeadline", "20s", "progressDeadline (20s) must be longer than canary.interval (30s)"),
    row("spec.gate", {"metrics": []}, "spec.gate.metrics", "at least 1 item"),
    row("spec.gate.metrics", [GATE_METRIC, GATE_METRIC], "spec.gate.metrics", "gate metric 'accuracy' appears twice"),
    row(f"{G}.name", "", "spec.gate.metrics.0.name", "at least 1 character"),
    row(f"{G}.min", "90%", "spec.gate.metrics.0.min", "'90%': min is an absolute number"),
    row(f"{G}.max", float("inf"), "spec.gate.metrics.0.max", "finite number"),
    row(f"{G}.maxDrop", -0.01, "spec.gate.metrics.0.maxDrop", "greater than or equal to 0"),
    row(f"{G}.maxRise", "5%", "spec.gate.metrics.0.maxRise", "write maxIncrease: '5%' for a relative bound"),
    # A bare number is ambiguous in the gate (one point or one percent?): refused with both readings.
    row(f"{G}.maxDecrease", 0.02, "spec.gate.metrics.0.maxDecrease", "0.02 is ambiguous", "'1%'", "maxDrop: 0.02"),
    row(f"{G}.maxIncrease", "five percent", "spec.gate.metrics.0.maxIncrease", "invalid relative bound 'five percent'"),
    row(f"{G}.missing", "skip", "spec.gate.metrics.0.missing", "'fail' or 'pass'", "got 'skip'"),
    row("spec.gate.missing", "ignore", "spec.gate.missing", "'fail' or 'pass'", "got 'ignore'"),
    row("spec.postPromotion", "1m", "spec.postPromotion", "valid dictionary"),
    row("spec.postPromotion.watch", "10s", "postPromotion.watch (10s) is shorter than canary.interval (30s)"),
]
# Bad input that is not one field's value: typo'd keys.
EXTRA_SPEC_ROWS: list[SpecRow] = [
    row("spec.canary.step", [10], "spec.canary.step", "unknown field"),
    row("spec.analysis.metrics[].maxIncrese", "10%", "spec.analysis.metrics.0.maxIncrese", "unknown field"),
]
# The status is the controller's to write, never read from a rollout file: its bad input is an
# unreadable status file (`test_an_unreadable_status_file_is_named`).
NOT_INPUT = {"status"}


def _models_in(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The pydantic models a field's type holds, and whether each sits in a list."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False
    elif origin is typing.Annotated:
        yield from _models_in(args[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _models_in(arg)
    elif origin is list:
        for model, _ in _models_in(args[0]):
            yield model, True
    elif origin is dict:
        yield from _models_in(args[1])


def spec_fields(model: type[BaseModel] = ModelRollout, prefix: str = "") -> Iterator[str]:
    """Every field of the document, by its wire name: `spec.analysis.metrics[].maxIncrease`."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        if path in NOT_INPUT:
            continue
        yield path
        for nested, in_list in _models_in(info.annotation):
            yield from spec_fields(nested, f"{path}[]." if in_list else f"{path}.")


def document_with(row: SpecRow) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    for path, value in (*row.also, (row.field, row.value)):
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[part[:-2]][0] if part.endswith("[]") else node[part]
        key = last.removesuffix("[]")
        if value is DELETE:
            node.pop(key, None)
        else:
            node[key] = copy.deepcopy(value)
    return doc


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def home_with_state(tmp_path: Path) -> LocalHome:
    """A local home where rollout `table` is mid-canary: what a bad file must not touch."""
    home = LocalHome(tmp_path / "home")
    store = StateStore(home.state_dir)
    store.save("table", RolloutStatus(phase=Phase.CANARY, stable_version="1", candidate_version="2", step=1))
    store.add_command("table", "pause")
    return home


def test_every_spec_field_has_a_row() -> None:
    fields = set(spec_fields())
    rows = [r.field for r in SPEC_ROWS]
    assert len(rows) == len(set(rows)), "a field has two rows"
    missing, stale = sorted(fields - set(rows)), sorted(set(rows) - fields)
    assert not missing, f"canary/decision/spec.py has fields without a bad-input row in SPEC_ROWS: {missing}"
    assert not stale, f"SPEC_ROWS names fields canary/decision/spec.py does not have: {stale}"


def test_the_base_document_is_valid_everywhere(tmp_path: Path) -> None:
    """Each row then breaks only its own field."""
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(BASE))
    result = invoke("lint", "-f", path)
    assert result.exit_code == 0, result.stderr
    assert read_resource(BASE).rollout.spec.gate is not None


@pytest.mark.parametrize("bad", SPEC_ROWS + EXTRA_SPEC_ROWS, ids=lambda r: r.field)
def test_a_bad_spec_value_is_refused_naming_the_field(bad: SpecRow, tmp_path: Path, home_with_state: LocalHome) -> None:
    doc = document_with(bad)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    shown = "(missing)" if bad.value is DELETE else repr(bad.value)

    line = one_line_error(invoke("lint", "-f", path))
    assert line.startswith(f"error: {path}: "), line
    for fragment in bad.says:
        assert fragment in line, f"{bad.field}={shown}: {fragment!r} not in {line!r}"

    # `local run` refuses the same file before touching anything: the rollout's state, its queued
    # command and the home stay byte for byte as they were.
    before = snapshot(home_with_state.root)
    assert one_line_error(invoke("local", "run", "-f", path, "--home", home_with_state.root, "--once")) == line
    assert snapshot(home_with_state.root) == before

    # The operator reads the spec it gets from the API server with the same rules, and writes the
    # very same message into SpecValid=False. apiVersion, kind, metadata and a spec at all are the
    # API server's to check (the CRD requires spec).
    if bad.field.startswith("spec.") or bad.field == "spec" and bad.value is not DELETE:
        obj = {**doc, "metadata": {**doc["metadata"], "uid": "u1", "resourceVersion": "7"}}
        with pytest.raises(SpecError) as refused:
            read_resource(obj)
        assert str(refused.value) == line.replace(f"error: {path}: ", "default/table: ", 1)


def test_a_rollout_without_target_is_refused_by_the_operator_alone(tmp_path: Path) -> None:
    """`spec.target` names the InferenceService: optional locally (lint accepts it), required on
    Kubernetes, where the operator says so in SpecValid=False."""
    doc = document_with(row("spec.target", DELETE))
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert invoke("lint", "-f", path).exit_code == 0
    with pytest.raises(SpecError, match=r"^default/table: spec.target: required on Kubernetes \(the InferenceService"):
        read_resource(doc)


def test_an_unreadable_status_file_is_named(tmp_path: Path) -> None:
    home = LocalHome(tmp_path / "home")
    home.state_dir.mkdir(parents=True)
    broken = home.state_dir / "table.status.json"
    broken.write_text('{"phase": "Canary", "step":')
    before = snapshot(home.root)
    line = one_line_error(invoke("status", "table", "--home", home.root))
    assert str(broken) in line and "unreadable status" in line and "move it away" in line, line
    assert snapshot(home.root) == before


# =================================================================================================
# 2. Rollout files that are not YAML, or not ModelRollouts
# =================================================================================================

GOOD_YAML = yaml.safe_dump(BASE)
# (id, file content, what the one-line error holds)
YAML_ROWS: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("unclosed-bracket", "spec: [1, 2\n", ("malformed YAML", "line 2")),
    ("tab-indentation", "spec:\n\tmodel: x\n", ("line 2, column 1", "malformed YAML", "found character '\\t'")),
    ("undefined-alias", "spec: *nowhere\n", ("line 1", "malformed YAML", "found undefined alias 'nowhere'")),
    # The safe loader never builds Python objects: the tag is refused, the command never runs.
    ("python-object-tag", "spec: !!python/object/apply:os.system ['touch PWNED']\n", ("malformed YAML", "could not determine a constructor")),
    ("a-list", "- apiVersion: modelrollout.io/v1alpha1\n", ("expected a mapping with apiVersion, kind, metadata and spec, got list",)),
    ("a-scalar", "just text\n", ("expected a mapping", "got str")),
    ("empty", "", ("no ModelRollout document found",)),
    ("only-comments", "# nothing here\n---\n", ("no ModelRollout document found",)),
    ("same-name-twice", GOOD_YAML + "---\n" + GOOD_YAML, ("rollout name(s) used twice: table",)),
    (
        "second-document-bad",
        GOOD_YAML + "---\n" + yaml.safe_dump({**BASE, "metadata": {"name": "other"}, "spec": {**BASE["spec"], "canary": {"steps": [0]}}}),
        ("[1]: spec.canary.steps", "step 0 is 0%"),
    ),
]


@pytest.mark.parametrize(("content", "says"), [r[1:] for r in YAML_ROWS], ids=[r[0] for r in YAML_ROWS])
def test_a_malformed_rollout_file_is_named(content: str, says: tuple[str, ...], tmp_path: Path, home_with_state: LocalHome, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "rollout.yaml"
    path.write_text(content)
    line = one_line_error(invoke("lint", "-f", path))
    assert line.startswith(f"error: {path}"), line
    for fragment in says:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    before = snapshot(home_with_state.root)
    assert one_line_error(invoke("local", "run", "-f", path, "--home", home_with_state.root, "--once")) == line
    assert snapshot(home_with_state.root) == before
    assert not (tmp_path / "PWNED").exists()


def test_a_missing_rollout_file_is_named(tmp_path: Path) -> None:
    line = one_line_error(invoke("lint", "-f", tmp_path / "absent.yaml"))
    assert line == f"error: {tmp_path / 'absent.yaml'}: file not found"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p.write_bytes(b"\xff\xfe not text"), "not UTF-8 text (byte 0)"),
        (lambda p: p.mkdir(), "cannot be read: Is a directory"),
    ],
    ids=["not-utf8", "a-directory"],
)
def test_a_rollout_file_that_is_not_text_is_named(make: Callable[[Path], Any], says: str, tmp_path: Path, home_with_state: LocalHome) -> None:
    path = tmp_path / "rollout.yaml"
    make(path)
    line = one_line_error(invoke("lint", "-f", path))
    assert line == f"error: {path}: {says}" or line.startswith(f"error: {path}: {says}"), line
    before = snapshot(home_with_state.root)
    assert one_line_error(invoke("local", "run", "-f", path, "--home", home_with_state.root, "--once")) == line
    assert snapshot(home_with_state.root) == before


def test_the_installed_cli_answers_malformed_yaml_with_one_line(tmp_path: Path) -> None:
    """The same answer from the `modelrollout` command pip installed, run as a user runs it."""
    command = Path(sys.executable).with_name("modelrollout")
    assert command.exists(), f"{command}: the project is not installed in this environment (make test installs it)"
    path = tmp_path / "rollout.yaml"
    path.write_text("spec: [1, 2\n")
    run = subprocess.run(
        [str(command), "lint", "-f", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "malformed YAML" in lines[0] and str(path) in lines[0], run.stderr
    assert run.stdout == ""


# =================================================================================================
# 3. Analysis queries that Prometheus cannot run, templates that cannot be filled
# =================================================================================================


@dataclass(frozen=True)
class QueryRow:
    check: str  # the check's name in the rollout
    query: str
    says: str  # what the check's verdict message (and the AnalysisError event) holds
    preflight: bool  # `local run`'s pre-flight names it before anything starts


QUERY_ROWS = [
    QueryRow(
        "parse-error",
        'sum(rate(modelrollout_requests_total{rollout="{{ rollout }}"}[{{ interval }}]) by (',
        "Prometheus rejected the query: invalid parameter \"query\": 1:",
        preflight=True,
    ),
    QueryRow(
        "execution-error",
        'label_replace(vector(1), "x", "$1", "y", "(")',
        "Prometheus could not evaluate the query (execution): invalid regular expression in label_replace()",
        preflight=True,
    ),
    # Pre-flight only asks whether Prometheus runs a query, not how many series it gives (usually
    # none before traffic): the analysis refuses a query that does not reduce to one number.
    QueryRow(
        "several-series",
        'label_replace(vector(1), "v", "a", "", "") or label_replace(vector(2), "v", "b", "", "")',
        "query returned 2 series",
        preflight=False,
    ),
    QueryRow(
        "malformed-placeholder",
        'sum(modelrollout_requests_total{model="{{ model-name }}"})',
        "malformed placeholder '{{ model-name }}'",
        preflight=True,
    ),
    # A known variable only a Kubernetes platform fills in.
    QueryRow(
        "platform-variable",
        'sum(modelrollout_requests_total{pod=~"{{ revision }}-.*"})',
        "no value for variable 'revision'",
        preflight=True,
    ),
]
QUERY_INTERVAL_S = 2.0
WINDOWS_JUDGED = 2
# Status fields a judged window rewrites: the verdicts, the AnalysisPassing condition, and the
# start of the next window. Everything else must stay as it was while the checks error.
WINDOW_BOOKKEEPING = {"checks", "conditions", "message", "window_started_at"}


@dataclass
class QueryRun:
    preflight: list[PreflightProblem]
    before: RolloutStatus  # when the candidate was ready and its first window began
    after: RolloutStatus  # WINDOWS_JUDGED windows later
    errors: list[dict]  # the AnalysisError events
    endpoint: str


def query_rollout(model: str) -> ModelRollout:
    good = {"name": "error-rate", "template": "error_rate", "max": 0.05, "noData": "pass"}
    bad = [{"name": r.check, "query": r.query, "max": 1} for r in QUERY_ROWS]
    return parse_rollout(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": model},
            "spec": {
                "model": {"name": model},
                "shadow": {"enabled": False},
                "canary": {"steps": [40, 80], "interval": f"{QUERY_INTERVAL_S:g}s"},
                "progressDeadline": "10m",  # the step is held by the errors, never by the deadline
                "analysis": {"metrics": [good, *bad]},
            },
        }
    )


@pytest.fixture(scope="module")
def query_run(tmp_path_factory, mlflow_server, prometheus_server, iris_model_uri) -> Iterator[QueryRun]:
    """One rollout whose canary runs every bad query of QUERY_ROWS next to a good check, on the
    session's MLflow and Prometheus, ticked until WINDOWS_JUDGED windows were judged."""
    import mlflow

    model = "bad-input-queries"
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    for alias in ("champion", "challenger"):
        client.set_registered_model_alias(model, alias, str(mlflow.register_model(iris_model_uri, model).version))
    rollout = query_rollout(model)
    env = pytest.MonkeyPatch()
    keep_mlflow_env(env)
    runner = LocalRunner(
        [rollout], LocalHome(tmp_path_factory.mktemp("queries")), Services(mlflow=mlflow_server.url, prometheus=prometheus_server.url)
    )
    try:
        preflight = runner.preflight()
        before = tick_until(runner, model, lambda s: s.window_started_at is not None, READY_TIMEOUT_S, "the candidate ready")
        assert (before.phase, before.step) == (Phase.CANARY, 0), before

        def analysis_errors() -> list[dict]:
            return [e for e in runner.store.events(model, 1000) if e["reason"] == "AnalysisError"]

        def holds(status: RolloutStatus) -> None:
            assert (status.phase, status.step) == (Phase.CANARY, 0), status.message

        after = tick_until(
            runner, model, lambda _: len(analysis_errors()) >= WINDOWS_JUDGED, 20 * QUERY_INTERVAL_S,
            f"{WINDOWS_JUDGED} windows judged", every_tick=holds,
        )  # fmt: skip
        endpoint = runner.platform.endpoint(model)
        assert endpoint is not None
        yield QueryRun(preflight, before, after, analysis_errors(), endpoint)
    finally:
        runner.platform.teardown(model)
        runner.platform.close()
        env.undo()


@pytest.mark.parametrize("bad", QUERY_ROWS, ids=lambda r: r.check)
def test_a_query_that_cannot_run_is_an_error_that_holds_the_step(bad: QueryRow, query_run: QueryRun) -> None:
    named = [p for p in query_run.preflight if f"metric {bad.check!r}" in p.where]
    if bad.preflight:
        assert len(named) == 1 and bad.says in named[0].message, query_run.preflight
    else:
        assert not named, named

    check = next(c for c in query_run.after.checks if c.name == bad.check)
    assert check.verdict == "error" and bad.says in check.message, check
    assert check.failures == 0  # an error is not a failed check: it never counts towards a rollback
    for event in query_run.errors:
        assert f"{bad.check}: " in event["message"] and bad.says in event["message"], event
    passing = next(c for c in query_run.after.conditions if c.type == "AnalysisPassing")
    # The condition names the cause too: what the user has to fix is the query.
    assert passing.status == "False" and f"{bad.check}: error (" in passing.message and bad.says in passing.message, passing
    # The good check passed in the same windows: only the errors hold the step.
    assert next(c for c in query_run.after.checks if c.name == "error-rate").verdict == "pass"


def test_queries_that_cannot_run_leave_the_rollout_where_it_was(query_run: QueryRun) -> None:
    before = query_run.before.model_dump(exclude=WINDOW_BOOKKEEPING)
    after = query_run.after.model_dump(exclude=WINDOW_BOOKKEEPING)
    assert after == before  # same phase, step, weights, versions, history: not advanced, not rolled back
    assert query_run.after.phase is Phase.CANARY and query_run.after.step == 0
    answer = httpx.post(f"{query_run.endpoint}/v1/models/bad-input-queries:predict", json={"instances": [IRIS_ROW]}, timeout=10)
    assert answer.status_code == 200, answer.text  # and clients are still served


# =================================================================================================
# 4. The registry: an alias on a deleted version, an artifact that fails to load
# =================================================================================================

DELETED, ARTIFACT = "deleted", "artifact"  # the two rollouts, one per row
REGISTRY_MODELS = {DELETED: "bad-input-deleted", ARTIFACT: "bad-input-artifact"}


def canary_rollout(name: str) -> ModelRollout:
    return parse_rollout(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": REGISTRY_MODELS[name]},
                "shadow": {"enabled": False},
                "canary": {"steps": [50], "interval": "5s"},
                "progressDeadline": "2m",
                "analysis": {"metrics": [{"name": "error-rate", "template": "error_rate", "max": 0.05}]},
            },
        }
    )


def stable_answers(http: httpx.Client, runner: LocalRunner, name: str, stable: str) -> bool:
    """A client request through the rollout's router is answered by the stable."""
    endpoint = runner.platform.endpoint(name)
    if endpoint is None:
        return False
    try:
        answer = http.post(f"{endpoint}/v1/models/{REGISTRY_MODELS[name]}:predict", json={"instances": [IRIS_ROW]})
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.headers.get("x-model-version") == stable


@dataclass
class RegistryRun:
    statuses: dict[str, RolloutStatus]  # once rolled back and the stable answers clients again
    stable: dict[str, str]
    candidate: dict[str, str]
    artifact_uri: str  # of the candidate that cannot be loaded
    client: mlflow.MlflowClient  # to read what the controller left in MLflow
    runner: LocalRunner


@pytest.fixture(scope="module")
def registry_run(tmp_path_factory, mlflow_server, prometheus_server, iris_model_uri) -> Iterator[RegistryRun]:
    """Both registry rows side by side in one controller (their model servers start together), on
    the session's MLflow: the candidate version of DELETED is deleted once its canary has begun;
    the candidate of ARTIFACT is an artifact that is no model."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    stable, candidate = {}, {}
    for name, model in REGISTRY_MODELS.items():
        stable[name] = str(mlflow.register_model(iris_model_uri, model).version)
        client.set_registered_model_alias(model, "champion", stable[name])
    candidate[DELETED] = str(mlflow.register_model(iris_model_uri, REGISTRY_MODELS[DELETED]).version)
    mlflow.set_experiment(TEST_EXPERIMENT)
    with mlflow.start_run() as run:  # an artifact that is there but is no loadable model
        mlflow.log_text("flavors: {broken", "model/MLmodel")
    candidate[ARTIFACT] = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", REGISTRY_MODELS[ARTIFACT]).version)
    for name, model in REGISTRY_MODELS.items():
        client.set_registered_model_alias(model, "challenger", candidate[name])
    artifact_uri = resolve_artifact_uri(client, REGISTRY_MODELS[ARTIFACT], candidate[ARTIFACT])

    env = pytest.MonkeyPatch()
    keep_mlflow_env(env)
    services = Services(mlflow=mlflow_server.url, prometheus=prometheus_server.url)
    runner = LocalRunner([canary_rollout(n) for n in REGISTRY_MODELS], LocalHome(tmp_path_factory.mktemp("registry")), services)
    http = httpx.Client(timeout=5, trust_env=False)
    try:
        tick_all_until(
            runner, lambda all_: all_[DELETED].phase is Phase.CANARY and all_[DELETED].candidate_version == candidate[DELETED],
            READY_TIMEOUT_S, "the canary of the version to delete",
        )  # fmt: skip
        client.delete_model_version(REGISTRY_MODELS[DELETED], candidate[DELETED])  # MLflow drops its alias with it
        statuses = tick_all_until(
            runner,
            lambda all_: all(s.phase is Phase.ROLLED_BACK for s in all_.values())
            and all(stable_answers(http, runner, n, stable[n]) for n in all_),
            READY_TIMEOUT_S, "both rolled back, and each stable serving clients",
        )  # fmt: skip
        yield RegistryRun(statuses, stable, candidate, artifact_uri, client, runner)
    finally:
        http.close()
        for name in REGISTRY_MODELS:
            runner.platform.teardown(name)
        runner.platform.close()
        env.undo()


def test_alias_on_a_deleted_version_rolls_back_naming_the_alias(registry_run: RegistryRun) -> None:
    """Deeper, with a shadow: tests/integration/test_runner_failures.py::test_candidate_deleted_mid_rollout_rolls_back_and_ends;
    the registry's side: tests/integration/test_registry.py::test_alias_on_a_deleted_version."""
    status, doomed = registry_run.statuses[DELETED], registry_run.candidate[DELETED]
    assert status.message == f"alias 'challenger' was removed from v{doomed}", status.message
    assert status.rollback_kind == "superseded" and status.stable_version == registry_run.stable[DELETED]
    # Rolled back once, and nothing waits on the version that is gone: more ticks changed nothing.
    assert [(t.from_phase, t.to) for t in status.history] == [
        (Phase.IDLE, Phase.CANARY), (Phase.CANARY, Phase.ROLLING_BACK), (Phase.ROLLING_BACK, Phase.ROLLED_BACK),
    ]  # fmt: skip
    model = REGISTRY_MODELS[DELETED]
    assert registry_run.client.get_model_version_by_alias(model, "champion").version == registry_run.stable[DELETED]
    assert not registry_run.runner.platform.health(DELETED, doomed).ready  # its model server is gone


def test_an_artifact_that_fails_to_load_rolls_back_naming_it(registry_run: RegistryRun) -> None:
    """Deeper: tests/integration/test_runner_failures.py::test_artifact_that_fails_to_load_rolls_back_with_the_load_error;
    the model server's own exit line: tests/integration/test_modelserver.py."""
    status, broken, uri = registry_run.statuses[ARTIFACT], registry_run.candidate[ARTIFACT], registry_run.artifact_uri
    model = REGISTRY_MODELS[ARTIFACT]
    assert status.message.startswith(f"candidate failed: model server for {model} v{broken} exited (code 1): "), status.message
    assert f"cannot load model {uri!r}" in status.message, status.message
    ready = next(c for c in status.conditions if c.type == "CandidateReady")
    assert (ready.status, ready.reason) == ("False", "CandidateFailed") and f"cannot load model {uri!r}" in ready.message
    assert [(t.from_phase, t.to) for t in status.history] == [
        (Phase.IDLE, Phase.CANARY), (Phase.CANARY, Phase.ROLLING_BACK), (Phase.ROLLING_BACK, Phase.ROLLED_BACK),
    ]  # fmt: skip
    tags = registry_run.client.get_model_version(model, broken).tags
    assert tags["modelrollout.status"] == "rolled_back" and tags["modelrollout.reason"] == status.message
    assert registry_run.client.get_model_version_by_alias(model, "champion").version == registry_run.stable[ARTIFACT]


# =================================================================================================
# 5. Inference payloads, through the real router and the real model server
# =================================================================================================

# Small enough to test cheaply, below the router's 1 MiB so the model server's own limit shows.
MODEL_SERVER_LIMIT = 256 * 1024
JSON_TYPE = {"content-type": "application/json"}
V1, V2 = "/v1/models/iris:predict", "/v2/models/iris/infer"


def v2_body(**tensor: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW, **tensor}]}).encode()


def chunks(total: int, size: int = 16 * 1024) -> Iterator[bytes]:
    """A body sent chunked, without Content-Length: only counting it bounds it."""
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


@dataclass(frozen=True)
class PayloadRow:
    id: str
    to: str  # "router" (what clients call) or "model server" (directly)
    path: str
    body: bytes | Callable[[], Iterator[bytes]]
    status: int
    says: str
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_TYPE))


PAYLOAD_ROWS = [
    # Answered by the model server, passed through by the router unchanged.
    PayloadRow("v1-not-json", "router", V1, b"not json", 400, "Unrecognized request format"),
    PayloadRow("v1-truncated-json", "router", V1, b'{"instances": [[1, 2, 3, 4]]', 400, "unexpected end of data"),
    PayloadRow("v1-not-utf8", "router", V1, b'\xff\xfe{"instances"', 400, "not valid UTF-8"),
    PayloadRow("v1-empty-body", "router", V1, b"", 400, "empty document"),
    PayloadRow("v1-nan", "router", V1, b'{"instances": [[NaN, 2, 3, 4]]}', 400, "Unrecognized request format"),
    PayloadRow("v1-infinite-number", "router", V1, b'{"instances": [[1e999, 2, 3, 4]]}', 400, "infinity"),
    PayloadRow("v1-nested-5000-deep", "router", V1, b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "depth limit exceeded"),
    PayloadRow("v1-array-body", "router", V1, b"[1, 2]", 400, 'expected a JSON object {"instances": [...]}'),
    PayloadRow("v1-text-plain", "router", V1, b'{"instances": [[1, 2, 3, 4]]}', 400, "content-type application/json", {"content-type": "text/plain"}),
    PayloadRow("v1-no-instances", "router", V1, b'{"rows": [[1, 2, 3, 4]]}', 400, 'missing "instances"'),
    PayloadRow("v1-ragged-rows", "router", V1, b'{"instances": [[1, 2, 3, 4], [1, 2]]}', 400, "different lengths"),
    PayloadRow("v1-too-few-features", "router", V1, b'{"instances": [[5.1, 3.5, 1.4]]}', 400, "3 features"),
    PayloadRow("v1-strings", "router", V1, b'{"instances": [["a", "b", "c", "d"]]}', 400, "the model rejected the input"),
    PayloadRow("v2-not-json", "router", V2, b"{nope", 400, "not valid JSON"),
    PayloadRow("v2-empty-body", "router", V2, b"", 400, "invalid request: body"),
    PayloadRow("v2-no-content-type", "router", V2, v2_body(), 400, "'inference-header-content-length' header is missing", {}),
    PayloadRow("v2-unknown-datatype", "router", V2, v2_body(datatype="FLOAT"), 400, "unknown datatype 'FLOAT'"),
    PayloadRow("v2-shape-mismatch", "router", V2, v2_body(shape=[2, 4]), 400, "does not match shape [2, 4]"),
    # A shape that would need 3 TB if believed: refused by arithmetic, nothing allocated.
    PayloadRow("v2-huge-shape", "router", V2, v2_body(shape=[10**11, 4]), 400, "does not match shape [100000000000, 4]"),
    # Answered by the router itself.
    PayloadRow("unknown-model", "router", "/v1/models/other:predict", b'{"instances": [[1, 2, 3, 4]]}', 404, "model 'other' is not served by rollout"),
    PayloadRow("bad-request-id", "router", V1, b'{"instances": [[1, 2, 3, 4]]}', 400, "x-request-id must be 1 to 200 visible ASCII characters", {**JSON_TYPE, "x-request-id": "two words"}),
    PayloadRow("router-over-1mib", "router", V1, b" " * ((1 << 20) + 1), 413, "request body larger than 1048576 bytes"),
    PayloadRow("router-over-1mib-chunked", "router", V1, lambda: chunks((1 << 20) + 1), 413, "request body larger than 1048576 bytes"),
    # Within the router's limit, over the model server's: its 413 reaches the client as it is.
    PayloadRow("model-server-limit-behind-router", "router", V1, b" " * (MODEL_SERVER_LIMIT + 1), 413, f"request body larger than {MODEL_SERVER_LIMIT} bytes"),
    PayloadRow("model-server-over-limit", "model server", V1, b" " * (MODEL_SERVER_LIMIT + 1), 413, f"request body larger than {MODEL_SERVER_LIMIT} bytes"),
    PayloadRow("model-server-over-limit-chunked", "model server", V2, lambda: chunks(MODEL_SERVER_LIMIT + 1), 413, f"request body larger than {MODEL_SERVER_LIMIT} bytes"),
]


@dataclass
class Serving:
    router: Process
    model_server: Process
    http: httpx.Client  # one for the module: a new client per request costs more than the request

    def url(self, to: str) -> str:
        return self.router.url if to == "router" else self.model_server.url

    def errors_counted(self) -> float:
        """The stable's failed requests as the router exports them: what the error-rate check reads."""
        text = self.http.get(self.router.url + "/metrics").text
        lines = [line for line in text.splitlines() if line.startswith("modelrollout_request_errors_total{")]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    """A KServe model server with a small --max-body-bytes, behind a router with its defaults."""
    base = tmp_path_factory.mktemp("payloads")
    path = save_sklearn(fit_logistic(), base / "iris-model")
    server = spawn(
        "controller.local.modelserver",
        ["--name", "iris", "--model-uri", str(path), "--version", "1", "--max-body-bytes", str(MODEL_SERVER_LIMIT)],
        base, "modelserver",
    )  # fmt: skip
    router = spawn("canary.traffic.router", ["--rollout", "bad-input"], base, "router")
    try:
        server.wait_ready("/v2/health/ready")
        router.wait_ready("/healthz")
        routing = {"model": "iris", "stable": {"version": "1", "url": server.url}}
        with httpx.Client(timeout=30, trust_env=False) as http:
            http.put(router.url + "/admin/routing", json=routing).raise_for_status()
            yield Serving(router, server, http)
    finally:
        router.stop()
        server.stop()


@pytest.mark.parametrize("bad", PAYLOAD_ROWS, ids=lambda r: r.id)
def test_a_bad_inference_request_is_answered_4xx_with_a_message(bad: PayloadRow, serving: Serving) -> None:
    errors_before = serving.errors_counted()
    body = bad.body() if callable(bad.body) else bad.body
    answer = serving.http.post(serving.url(bad.to) + bad.path, content=body, headers=bad.headers)
    assert answer.status_code == bad.status, answer.text
    assert bad.says in answer.json()["error"], answer.text
    assert "Traceback" not in answer.text
    # Nothing lost: the next client is served, the bad request is not counted as the version's
    # failure (the analysis' error rate), and both processes are up.
    good = serving.http.post(serving.router.url + V1, json={"instances": [IRIS_ROW]})
    assert good.status_code == 200 and good.headers["x-model-version"] == "1", good.text
    assert serving.errors_counted() == errors_before
    assert serving.router.popen.poll() is None and serving.model_server.popen.poll() is None


def test_the_model_server_limit_has_a_sane_default_and_refuses_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    args = modelserver.parse_args(["--name", "iris", "--model-uri", "/m", "--port", "1"])
    assert args.max_body_bytes == modelserver.DEFAULT_MAX_BODY_BYTES == 16 * 1024 * 1024
    # Whatever the router forwards at its default, the model server takes.
    assert modelserver.DEFAULT_MAX_BODY_BYTES >= router_module.DEFAULT_MAX_BODY_BYTES
    for bad in ("0", "-1", "lots"):
        with pytest.raises(SystemExit) as exited:
            modelserver.parse_args(["--name", "iris", "--model-uri", "/m", "--port", "1", "--max-body-bytes", bad])
        assert exited.value.code == 2
        assert "--max-body-bytes" in capsys.readouterr().err


# =================================================================================================
# 6. MLflow webhooks, through the operator's HTTP server
# =================================================================================================

SECRET = "table-secret"
ALIAS_EVENT = json.dumps(
    {"entity": "model_version_alias", "action": "created", "timestamp": "2026-01-01T00:00:00Z", "data": {"name": "iris", "alias": "challenger", "version": "3"}}
).encode()


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]


def delivery(delivery_id: str, body: bytes = ALIAS_EVENT, *, age_s: float = 0.0, secret: str = SECRET) -> Delivery:
    """A delivery as MLflow signs it, stamped `age_s` seconds ago."""
    timestamp = str(int(time.time() - age_s))
    return Delivery(
        body,
        {
            "content-type": "application/json",
            "x-mlflow-delivery-id": delivery_id,
            "x-mlflow-timestamp": timestamp,
            "x-mlflow-signature": sign(secret, delivery_id, timestamp, body),
        },
    )


def tampered(d: Delivery) -> Delivery:
    return Delivery(d.body.replace(b'"3"', b'"4"'), d.headers)


def without(d: Delivery, header: str) -> Delivery:
    return Delivery(d.body, {k: v for k, v in d.headers.items() if k != header})


def with_header(d: Delivery, header: str, value: str) -> Delivery:
    return Delivery(d.body, {**d.headers, header: value})


# (id, the bad delivery made from a delivery id, status, what the answer's `detail` holds)
WEBHOOK_ROWS: list[tuple[str, Callable[[str], Delivery], int, str]] = [
    ("forged-with-another-secret", lambda i: delivery(i, secret="guessed"), 401, "signature does not match"),
    ("body-tampered-after-signing", lambda i: tampered(delivery(i)), 401, "signature does not match"),
    ("unsigned", lambda i: without(delivery(i), "x-mlflow-signature"), 400, "missing header x-mlflow-signature"),
    ("unknown-signature-scheme", lambda i: with_header(delivery(i), "x-mlflow-signature", "v0,AAAA"), 401, "no v1 signature"),
    ("stale-10-minutes", lambda i: delivery(i, age_s=600), 401, "s old, outside the 300 s replay window"),
    ("from-the-future", lambda i: delivery(i, age_s=-600), 401, "in the future, outside the 300 s replay window"),
    ("timestamp-not-unix-seconds", lambda i: with_header(delivery(i), "x-mlflow-timestamp", "yesterday"), 400, "not unix seconds"),
    ("signed-but-not-json", lambda i: delivery(i, b"{not json"), 400, "malformed body: not JSON"),
    ("signed-without-model-name", lambda i: delivery(i, b'{"entity": "model_version_alias", "action": "created", "data": {}}'), 400, "without data.name"),
    ("over-256-kib", lambda i: delivery(i, b" " * (256 * 1024 + 1)), 413, "body larger than 262144 bytes"),
]


@dataclass
class Receiver:
    url: str
    events: list[WebhookEvent]
    http: httpx.Client


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The operator's HTTP app with a webhook secret, served on a free loopback port."""
    events: list[WebhookEvent] = []
    server = HttpServer(create_app(CollectorRegistry(), lambda: None, lambda: None, SECRET, events.append), "127.0.0.1", 0)
    server.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the operator's HTTP server did not answer within 10 s"
            time.sleep(0.05)
        with httpx.Client(timeout=10, trust_env=False) as http:
            yield Receiver(server.url + WEBHOOK_PATH, events, http)
    finally:
        server.stop()


def post(receiver: Receiver, d: Delivery) -> httpx.Response:
    return receiver.http.post(receiver.url, content=d.body, headers=d.headers)


@pytest.mark.parametrize(("make", "status", "says"), [r[1:] for r in WEBHOOK_ROWS], ids=[r[0] for r in WEBHOOK_ROWS])
def test_a_bad_webhook_delivery_is_rejected_and_acts_on_nothing(
    make: Callable[[str], Delivery], status: int, says: str, receiver: Receiver, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    delivery_id = f"table-{request.node.callspec.id}"
    seen = len(receiver.events)
    bad = make(delivery_id)
    answer = post(receiver, bad)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"], answer.text
    assert len(receiver.events) == seen  # nothing reached the handler
    # Nothing lost: the genuine delivery with the same id is still acted on, once.
    good = delivery(delivery_id)
    genuine = post(receiver, good)
    assert genuine.status_code == 200 and genuine.json()["status"] == "accepted", genuine.text
    assert [e.delivery_id for e in receiver.events[seen:]] == [delivery_id]
    # The secret and the signatures never show, in answers or in logs.
    shown = answer.text + genuine.text + caplog.text
    assert SECRET not in shown
    for signed in (bad, good):
        assert signed.headers.get("x-mlflow-signature", SECRET).split(",", 1)[-1] not in shown


def test_a_replayed_webhook_delivery_is_acknowledged_but_not_acted_on_twice(receiver: Receiver) -> None:
    seen = len(receiver.events)
    first = delivery("table-replayed")
    assert post(receiver, first).json()["status"] == "accepted"
    # MLflow retries with the very same headers: 200, so it stops retrying, and nothing is done again.
    again = post(receiver, first)
    assert again.status_code == 200 and again.json() == {"status": "duplicate", "duplicate": True, "delivery_id": "table-replayed"}
    assert [e.delivery_id for e in receiver.events[seen:]] == ["table-replayed"]
