"""`modelrollout report` made from a real run: the engine driven through `reconcile` with real
MLflow (aliases, write-back tags) and real Prometheus scraping router-shaped metrics.

The serving side is simulated: `SimulatedServing` plays the model servers and the router — every
routed version is ready at once, and synthetic requests split by the routing the engine asked for
are exported with the router's own metric families (`canary.traffic.serving_metrics`), so the templates
query exactly the series the local router exports. Two attempts run once per module: v2 (as fast
as v1) goes shadow -> 25% -> 50% -> promoted -> watched -> succeeded; v3 (ten times slower) is
rolled back on latency in its shadow. Every test then reports on that recorded state.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.image import imread
from typer.testing import CliRunner

from canary.decision.metrics import PrometheusProvider
from canary.decision.spec import Phase, RolloutStatus, load_rollouts
from canary.traffic.serving_metrics import BASELINE, STABLE, MetricFamilies, ServingMetrics
from controller.cli.main import app
from controller.demo.models import pip_requirements
from controller.local.home import LocalHome
from controller.local.ports import free_port
from controller.local.state import StateStore
from controller.platform import Routing, VersionHealth
from controller.reconcile import Ports, reconcile, watched_model
from controller.report.metrics import bucket_quantile, measure_checks, measure_latency
from controller.report.sources import from_local
from controller.report.timeline import select
from registry.connection import fail_fast_environment
from registry.report_upload import (
    REPORT_ARTIFACTS_TAG,
    REPORT_SUMMARY_TAG,
    upload_report,
)
from registry.watcher import RegistryWatcher
from tests.fixtures.mlflow import fit_iris

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUESTS_PER_TICK = 2  # every 50 ms: 40 requests/s
FAST, SLOW = (0.011, 0.019), (0.12, 0.18)  # seconds, uniform

cli = CliRunner()


def rollout_doc(name: str, model: str) -> dict:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model},
            "shadow": {"duration": "3s", "percent": 100},
            "canary": {"steps": [25, 50], "interval": "3s"},
            "progressDeadline": "30s",
            "postPromotion": {"watch": "3s"},  # the errors check (an absolute bound) keeps running
            "analysis": {
                "metrics": [
                    {"name": "latency-p95", "template": "latency_p95", "maxIncrease": "50%", "minSamples": 10},
                    {"name": "errors", "template": "error_rate", "max": 0.05, "minSamples": 10},
                    {"name": "agreement", "template": "shadow_agreement", "min": 0.9, "minSamples": 10},
                    {"name": "accuracy", "template": "accuracy", "maxDecrease": "10%", "minSamples": 10},
                    # Nothing exports this: its plot must say "no data", and noData=pass lets it pass.
                    {
                        "name": "queue-depth",
                        "query": 'max(report_test_missing_metric{rollout="{{ rollout }}"})',
                        "max": 5,
                        "noData": "pass",
                    },
                ]
            },
        },
    }


class SimulatedServing:
    """The Platform port played by a traffic generator: what the engine routes is what gets traffic.

    Requests are split deterministically (candidate when `i % 100 < weight`); in the shadow every
    request also goes to the candidate (role shadow) and is compared. Every 20th labelled answer is
    wrong for every version, so accuracy is 0.95 throughout and never decides anything.
    """

    def __init__(self, metrics: ServingMetrics, model: str, latency: Mapping[str, tuple[float, float]]):
        self.metrics, self.model, self.latency = metrics, model, latency
        self.routing: Routing | None = None
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.rng = np.random.default_rng(7)

    # Platform
    def apply(self, rollout: str, routing: Routing, artifact_uris: Mapping[str, str]) -> None:
        with self.lock:
            if routing != self.routing:
                self.metrics.prepare(self.model, routing.stable_version or "", STABLE)
                if routing.candidate_version:
                    self.metrics.prepare(self.model, routing.candidate_version, routing.candidate_role or "canary")
                if routing.candidate_role == "shadow":
                    self.metrics.prepare(self.model, routing.stable_version or "", BASELINE)
            self.routing = routing

    def health(self, rollout: str, version: str) -> VersionHealth:
        with self.lock:
            return VersionHealth(ready=self.routing is not None and version in self.routing.versions)

    def endpoint(self, rollout: str) -> str | None:
        return None

    def analysis_variables(self, rollout: str, version: str) -> Mapping[str, str]:
        return {}

    def teardown(self, rollout: str) -> None:
        pass

    # traffic
    def _answer(self, version: str, role: str, i: int) -> None:
        lo, hi = self.latency[version]
        self.metrics.observe_request(self.model, version, role, float(self.rng.uniform(lo, hi)), failed=False)
        if role != BASELINE:  # the baseline's answers are only timed, never scored
            self.metrics.observe_feedback(self.model, version, role, total=1, correct=int(i % 20 != 0))

    def send(self) -> None:
        with self.lock:
            routing = self.routing
            if routing is None or routing.stable_version is None:
                return
            i = next(self.counter)
            candidate = routing.candidate_version
            if candidate and routing.candidate_role == "canary" and i % 100 < routing.candidate_weight:
                self._answer(candidate, "canary", i)
            else:
                self._answer(routing.stable_version, STABLE, i)
                if candidate and routing.candidate_role == "shadow" and i % 100 < routing.shadow_percent:
                    self._answer(candidate, "shadow", i)
                    # As the router does: each copy also goes to the stable's baseline server.
                    self._answer(routing.stable_version, BASELINE, i)
                    self.metrics.observe_comparison(self.model, candidate, compared=1, agreed=1)


@dataclass(frozen=True)
class Run:
    name: str
    model: str
    home: LocalHome
    rollout_file: Path
    prometheus_url: str
    mlflow_url: str
    versions: tuple[str, str, str]

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)

    def report(self, out: Path, *extra: str):
        return cli.invoke(
            app,
            ["report", self.name, "-f", str(self.rollout_file), "--home", str(self.home.root), "--out", str(out),
             "--prometheus-url", self.prometheus_url, *extra],
        )  # fmt: skip


def _drive(rollout, store, ports, watcher, until, timeout: float, what: str) -> RolloutStatus:
    deadline = time.monotonic() + timeout
    status = store.load(rollout.metadata.name)
    while time.monotonic() < deadline:
        now = datetime.now(timezone.utc)
        status = reconcile(rollout, store.load(rollout.metadata.name), watcher.poll(), None, [], ports, now)
        if until(status):
            return status
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: phase={status.phase.value} message={status.message!r}")


@pytest.fixture(scope="module")
def run(mlflow_server, iris_model_uri, prometheus_server, metrics_exporter, tmp_path_factory) -> Iterator[Run]:
    import mlflow

    suffix = secrets.token_hex(3)
    name, model = f"report-{suffix}", f"report-model-{suffix}"
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    # v1 and v2 come from a training run (their report goes to it); v3 was logged outside any run.
    mlflow.set_experiment("modelrollout-tests")
    with mlflow.start_run(run_name="report-training"):
        trained = mlflow.sklearn.log_model(
            fit_iris(), name="model", serialization_format="cloudpickle", pip_requirements=pip_requirements()
        )
    sources = (trained.model_uri, trained.model_uri, iris_model_uri)
    versions = tuple(str(mlflow.register_model(uri, model).version) for uri in sources)
    v1, v2, v3 = versions
    client.set_registered_model_alias(model, "champion", v1)

    root = tmp_path_factory.mktemp("report-run")
    home = LocalHome(root / "home")
    rollout_file = root / "rollout.yaml"
    rollout_file.write_text(yaml.safe_dump(rollout_doc(name, model)))
    [rollout] = load_rollouts(rollout_file.read_text())
    store = StateStore(home.state_dir)

    families = MetricFamilies()
    shared = metrics_exporter.registry
    collectors = [families.requests, families.errors, families.duration, families.comparisons,
                  families.agreements, families.feedback, families.feedback_correct]  # fmt: skip
    for collector in collectors:
        shared.register(collector)
    serving = SimulatedServing(ServingMetrics(name, families), model, {v1: FAST, v2: FAST, v3: SLOW})
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(0.05):
            for _ in range(REQUESTS_PER_TICK):
                serving.send()

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        with PrometheusProvider(prometheus_server.url) as provider:
            ports = Ports(
                client=client, platform=serving, metrics=provider, save_status=store.save, record_event=store.record_event
            )
            watcher = RegistryWatcher(client, [watched_model(rollout)])
            _drive(rollout, store, ports, watcher, lambda s: s.stable_version == v1, 20, "the stable")
            time.sleep(2.5)  # the stable's series exist and are scraped before the candidate starts
            client.set_registered_model_alias(model, "challenger", v2)
            done = _drive(rollout, store, ports, watcher, lambda s: s.candidate_version == v2 and s.phase.terminal, 60, "v2")
            assert done.phase is Phase.SUCCEEDED, done.message
            time.sleep(1.5)
            client.set_registered_model_alias(model, "challenger", v3)
            done = _drive(rollout, store, ports, watcher, lambda s: s.candidate_version == v3 and s.phase.terminal, 60, "v3")
            assert done.phase is Phase.ROLLED_BACK and done.message.startswith(f"v{v3} is slower than v{v2}"), done.message
    finally:
        stop.set()
        sender.join(5)
        for collector in collectors:
            shared.unregister(collector)
    yield Run(name, model, home, rollout_file, prometheus_server.url, mlflow_server.url, versions)


@pytest.fixture(autouse=True)
def _mlflow_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`report --mlflow` sets MLflow's fail-fast variables for its process, which here is pytest's:
    restore them after each test so later tests keep the session's settings."""
    import os

    for key in fail_fast_environment():
        monkeypatch.setenv(key, os.environ.get(key, ""))
        if not os.environ[key]:
            monkeypatch.delenv(key)


# ---------------------------------------------------------------------------------------------
# checks on the output


def referenced_images(index: Path) -> list[str]:
    import re

    return re.findall(r'<img src="([^"]+)"', index.read_text(encoding="utf-8"))


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, f"{path.name}: only {len(data)} bytes"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 400, (path.name, pixels.shape)
    rgb = (pixels[:, :, :3] * 255).astype(np.uint32)
    colours = np.unique((rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2])
    assert len(colours) > 20, f"{path.name}: {len(colours)} colours, a blank image"
    assert float(pixels.std()) > 0.02, f"{path.name}: nearly a single flat colour"


def pngs(out: Path) -> set[str]:
    return {p.name for p in out.glob("*.png")}


def logged_files(client, run_id: str, path: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, path)}


def assert_report(out: Path) -> str:
    index = out / "index.html"
    assert index.is_file()
    sources = referenced_images(index)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert sorted(sources) == pngs, (sources, pngs)  # every PNG is referenced, every reference exists
    for name in pngs:
        assert_valid_png(out / name)
    return index.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# the reports


def test_report_of_the_rollback_with_mlflow_upload(run: Run, tmp_path: Path):
    out = tmp_path / "latest"
    result = run.report(out, "--mlflow", "--mlflow-uri", run.mlflow_url)
    assert result.exit_code == 0, result.stdout + result.stderr
    html = assert_report(out)
    _, _, v3 = run.versions
    assert {p.name for p in out.glob("*.png")} == {
        "timeline.png", "latency.png", "check-1-latency-p95.png", "check-2-errors.png", "check-3-agreement.png",
        "check-4-accuracy.png", "check-5-queue-depth.png",
    }  # fmt: skip
    # The decision and its evidence.
    assert '<div class="phase">RolledBack</div>' in html
    assert "latency-p95" in html and "maxIncrease 50%" in html and "decided in Shadow (100% mirrored)" in html
    assert f"candidate v{v3} against stable v{run.versions[1]}" in html  # the stable it was compared with: v2
    assert "Last check results recorded by the controller" in html and "RollingBack" in html and "RolloutStarted" in html
    assert "RolledBack" in result.stdout and "report written" in result.stdout

    client = run.client()
    version = client.get_model_version(run.model, v3)
    assert version.tags[REPORT_SUMMARY_TAG].startswith(f"RolledBack: v{v3} vs v{run.versions[1]}")
    assert "latency-p95" in version.tags[REPORT_SUMMARY_TAG]
    # v3 has no run of its own: the report got one, named after the rollout and version.
    assert not version.run_id
    uri = version.tags[REPORT_ARTIFACTS_TAG]
    run_id = uri.split("/")[1]
    assert uri == f"runs:/{run_id}/modelrollout-report/{run.name}/v{v3}"
    assert client.get_run(run_id).info.run_name == f"{run.name}-v{v3}"
    assert logged_files(client, run_id, f"modelrollout-report/{run.name}/v{v3}") == {"index.html", *pngs(out)}
    assert "modelrollout.summary" not in version.tags  # the engine's promotion record is not a report's

    # Uploaded again: the same run holds it, its files replaced, the summary the new one.
    (out / "index.html").write_text("<p>again</p>")
    again = upload_report(client, run.model, v3, run.name, out, "again")
    assert (again.run_id, again.own_run, again.artifact_uri) == (run_id, True, uri)
    assert client.get_model_version(run.model, v3).tags[REPORT_SUMMARY_TAG] == "again"
    fetched = client.download_artifacts(run_id, f"modelrollout-report/{run.name}/v{v3}/index.html", str(tmp_path))
    assert Path(fetched).read_text() == "<p>again</p>"


def test_the_promotion_before_it_is_reported_with_version(run: Run, tmp_path: Path):
    out = tmp_path / "v2"
    v1, v2, _ = run.versions
    result = run.report(out, "--version", v2, "--mlflow", "--mlflow-uri", run.mlflow_url)
    assert result.exit_code == 0, result.stdout + result.stderr
    html = assert_report(out)
    # v2 came from a training run: the report is logged there, beside the model.
    client = run.client()
    version = client.get_model_version(run.model, v2)
    assert version.run_id
    expected = f"runs:/{version.run_id}/modelrollout-report/{run.name}/v{v2}"
    assert version.tags[REPORT_ARTIFACTS_TAG] == expected
    assert logged_files(client, version.run_id, f"modelrollout-report/{run.name}/v{v2}") == {"index.html", *pngs(out)}
    assert version.tags[REPORT_SUMMARY_TAG].startswith(f"Succeeded: v{v2} vs v{v1}")
    assert version.tags["modelrollout.summary"].startswith(f"promoted over v{v1}")  # the engine's, untouched
    assert '<div class="phase">Succeeded</div>' in html
    assert f"candidate v{v2} against stable v{v1}" in html
    assert "Canary 1/2 (25%)" in html and "Canary 2/2 (50%)" in html and "decided in Canary 2/2 (50%)" in html
    assert '<div class="reason">all 4 checks passed</div>' in html  # agreement runs in the shadow only
    # An earlier attempt: the controller's last checks belong to v3's attempt and are not shown.
    assert "Last check results recorded by the controller" not in html


def test_re_measured_evidence_matches_what_decided(run: Run):
    """The numbers behind the plots: the breach the controller saw is found again in Prometheus."""
    _, v2, v3 = run.versions
    record = from_local(run.home.state_dir, run.name, run.rollout_file)
    now = datetime.now(timezone.utc)
    with PrometheusProvider(run.prometheus_url) as provider:
        rollback = select(record.rollout.spec, record.status, record.events, None)
        assert (rollback.version, rollback.stable_version) == (v3, v2)
        evidence = {e.check.name: e for e in measure_checks(record, rollback, provider, now, latest=True)}
        [shadow] = evidence["latency-p95"].windows
        assert shadow.at_end is not None and shadow.at_end.verdict == "fail"
        assert shadow.at_end.candidate > 5 * shadow.at_end.baseline  # ~0.18 s vs ~0.02 s
        assert evidence["latency-p95"].recorded.verdict == "fail"
        assert evidence["queue-depth"].has_data is False
        # Every simulated comparison agreed; a scrape may land between the comparisons and the
        # agreements counter's increments (two calls), leaving the window one comparison short.
        agreement = evidence["agreement"].windows[0].at_end
        assert agreement.samples and agreement.candidate >= 1 - 1 / agreement.samples - 1e-9, agreement
        [latency] = measure_latency(record, rollback, provider, now)
        assert latency.role == "shadow"
        p95 = bucket_quantile(latency.bounds, latency.candidate, 0.95)
        assert 0.1 < p95 <= 0.2 and bucket_quantile(latency.bounds, latency.baseline, 0.95) <= 0.02
        # The same estimate as Prometheus' own histogram_quantile over the same buckets and span.
        selector = f'rollout="{run.name}",version="{v3}",role="shadow"'
        promql = (f"histogram_quantile(0.95, sum by (le) (increase("
                  f"modelrollout_request_duration_seconds_bucket{{{selector}}}[{latency.seconds:g}s])))")  # fmt: skip
        assert provider.query_value(promql, at=rollback.segments[0].end.timestamp()) == pytest.approx(p95)

        promotion = select(record.rollout.spec, record.status, record.events, v2)
        evidence = {e.check.name: e for e in measure_checks(record, promotion, provider, now, latest=False)}
        steps = [w.segment.label for w in evidence["latency-p95"].windows]
        assert steps == ["Shadow (100% mirrored)", "Canary 1/2 (25%)", "Canary 2/2 (50%)"]
        # The watch after the promotion measures the promoted version alone, as the stable it now is.
        watched = [w for w in evidence["errors"].windows]
        assert [w.segment.label for w in watched][-1] == "Watching" and watched[-1].baseline is None
        assert [w.at_end.verdict for w in watched] == ["pass", "pass", "pass", "pass"]
        assert watched[-1].candidate is not None and watched[-1].candidate.has_data
        assert [w.segment.label for w in evidence["agreement"].windows] == ["Shadow (100% mirrored)"]
        canary = [h for h in measure_latency(record, promotion, provider, now) if h.role == "canary"]
        assert canary and canary[0].candidate[-1] > 20 and canary[0].baseline[-1] > canary[0].candidate[-1]


def test_no_metrics_report_has_the_timeline_and_the_decision(run: Run, tmp_path: Path):
    out = tmp_path / "no-metrics"
    result = run.report(out, "--no-metrics", "--prometheus-url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 0, result.stdout + result.stderr
    html = assert_report(out)
    assert referenced_images(out / "index.html") == ["timeline.png"]
    assert "--no-metrics" in html and '<div class="phase">RolledBack</div>' in html


# ---------------------------------------------------------------------------------------------
# bad input: one line naming the cause, exit 2, nothing written


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_unreachable_prometheus_is_one_line(run: Run, tmp_path: Path):
    out = tmp_path / "x"
    dead = f"http://127.0.0.1:{free_port()}"
    result = cli.invoke(app, ["report", run.name, "-f", str(run.rollout_file), "--home", str(run.home.root),
                              "--out", str(out), "--prometheus-url", dead])  # fmt: skip
    one_line_error(result, dead, "--no-metrics")
    assert not out.exists()


def test_unreachable_mlflow_is_one_line(run: Run, tmp_path: Path):
    dead = f"http://127.0.0.1:{free_port()}"
    result = run.report(tmp_path / "x", "--no-metrics", "--mlflow", "--mlflow-uri", dead)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and dead in lines[0] and "unreachable" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["nosuch"], ["no rollout named 'nosuch'", "known:"]),
        (["{name}", "--version", "9"], ["no rollout of v9", "versions rolled out"]),
    ],
)
def test_unknown_rollout_or_version(run: Run, tmp_path: Path, args, fragments):
    args = [a.replace("{name}", run.name) for a in args]
    result = cli.invoke(app, ["report", *args, "-f", str(run.rollout_file), "--home", str(run.home.root),
                              "--out", str(tmp_path / "x"), "--no-metrics"])  # fmt: skip
    one_line_error(result, *fragments)
    assert not (tmp_path / "x").exists()


def test_missing_rollout_file_option_and_wrong_file(run: Run, tmp_path: Path):
    base = ["report", run.name, "--home", str(run.home.root), "--out", str(tmp_path / "x"), "--no-metrics"]
    one_line_error(cli.invoke(app, base), "-f FILE is required")
    one_line_error(cli.invoke(app, [*base, "-f", str(tmp_path / "absent.yaml")]), "absent.yaml", "not found")
    other = tmp_path / "other.yaml"
    doc = rollout_doc("someone-else", "m")
    other.write_text(yaml.safe_dump(doc))
    one_line_error(cli.invoke(app, [*base, "-f", str(other)]), "has no rollout named", "someone-else")


def test_unreadable_or_empty_status(tmp_path: Path):
    home = LocalHome(tmp_path / "home")
    home.state_dir.mkdir(parents=True)
    rollout = tmp_path / "rollout.yaml"
    doc = rollout_doc("broken", "m")
    rollout.write_text(yaml.safe_dump(doc))
    (home.state_dir / "broken.status.json").write_text("{not json")
    base = ["report", "broken", "-f", str(rollout), "--home", str(home.root), "--out", str(tmp_path / "x"), "--no-metrics"]
    one_line_error(cli.invoke(app, base), "broken.status.json", "unreadable status")

    StateStore(home.state_dir).save("broken", RolloutStatus())
    one_line_error(cli.invoke(app, base), "nothing has been rolled out")

    (home.state_dir / "broken.events.jsonl").write_text("not an event\n")
    one_line_error(cli.invoke(app, base), "unreadable events")
    assert not (tmp_path / "x").exists()


def test_an_out_that_is_a_file_is_one_line(run: Run, tmp_path: Path):
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    one_line_error(run.report(taken, "--no-metrics"), str(taken), "cannot write the report")


def test_no_local_services_and_no_prometheus_url_says_how(run: Run, tmp_path: Path):
    result = cli.invoke(app, ["report", run.name, "-f", str(run.rollout_file), "--home", str(run.home.root),
                              "--out", str(tmp_path / "x")], env={"PROMETHEUS_URL": ""})  # fmt: skip
    one_line_error(result, "local up", "--prometheus-url")


# ---------------------------------------------------------------------------------------------
# the Kubernetes source: the same rollout as a ModelRollout (spec + status) with its Events


def test_report_from_a_cluster(run: Run, kube_api, modelrollout_crd, kube_namespace, tmp_path: Path):
    import httpx

    record = from_local(run.home.state_dir, run.name, run.rollout_file)
    spec = record.rollout.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": run.name, "namespace": kube_namespace},
        "spec": {**spec, "target": {"inferenceService": "iris"}},
    }
    created = kube_api.apply(doc)[0]
    base = f"/apis/modelrollout.io/v1alpha1/namespaces/{kube_namespace}/modelrollouts/{run.name}"
    with httpx.Client(base_url=kube_api.url, timeout=10.0) as http:
        status = record.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        answer = http.patch(f"{base}/status", json={"status": status}, headers={"Content-Type": "application/merge-patch+json"})
        assert answer.status_code == 200, answer.text
        for event in record.events:
            when = event.time.strftime("%Y-%m-%dT%H:%M:%SZ")
            answer = http.post(f"/api/v1/namespaces/{kube_namespace}/events", json={
                "metadata": {"generateName": f"{run.name}.", "namespace": kube_namespace},
                "involvedObject": {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "name": run.name,
                                   "namespace": kube_namespace, "uid": created["metadata"]["uid"]},
                "reason": event.reason, "message": event.message, "type": event.type,
                "firstTimestamp": when, "lastTimestamp": when,
            })  # fmt: skip
            assert answer.status_code == 201, answer.text

    kube = ["--kube", "-n", kube_namespace, "--kubeconfig", str(kube_api.kubeconfig)]
    out = tmp_path / "cluster"
    result = cli.invoke(app, ["report", run.name, *kube, "--prometheus-url", run.prometheus_url, "--out", str(out)])
    assert result.exit_code == 0, result.stdout + result.stderr
    html = assert_report(out)
    assert len(referenced_images(out / "index.html")) == 7
    assert '<div class="phase">RolledBack</div>' in html and f"ModelRollout {kube_namespace}/{run.name}" in html
    assert f"candidate v{run.versions[2]} against stable v{run.versions[1]}" in html and "RolloutStarted" in html

    one_line_error(cli.invoke(app, ["report", "nosuch", *kube, "--no-metrics", "--out", str(tmp_path / "x")]),
                   "no ModelRollout named 'nosuch'", kube_namespace)  # fmt: skip
    one_line_error(cli.invoke(app, ["report", run.name, *kube, "--out", str(tmp_path / "x")], env={"PROMETHEUS_URL": ""}),
                   "--prometheus-url", "--kube")  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_a_query_prometheus_rejects_is_the_checks_problem_not_the_reports(run: Run, tmp_path: Path):
    """A spec edited since (or a query that never worked): that check's plot says why, the rest renders."""
    from dataclasses import replace

    from canary.decision.metrics import MetricsUnavailable, QueryRejected
    from canary.decision.spec import ModelRollout
    from controller.report import page as report

    record = from_local(run.home.state_dir, run.name, run.rollout_file)
    doc = record.rollout.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"]["analysis"]["metrics"].append({"name": "broken", "query": "sum(rate(x[{{ interval }}]) +", "max": 1})
    broken = replace(record, rollout=ModelRollout.model_validate(doc))
    with PrometheusProvider(run.prometheus_url) as provider:
        attempt = select(broken.rollout.spec, broken.status, broken.events, None)
        evidence = {e.check.name: e for e in measure_checks(broken, attempt, provider, datetime.now(timezone.utc), True)}
        assert "Prometheus rejected the query" in evidence["broken"].problem and not evidence["broken"].has_data
        assert evidence["latency-p95"].problem is None and evidence["latency-p95"].has_data
        made = report.write(broken, tmp_path / "r", provider)
        assert "check-6-broken.png" in referenced_images(made.index)
        assert_report(tmp_path / "r")

        with pytest.raises(QueryRejected, match="parse error"):
            provider.query_range("sum(", 0, 10, 1)
    with pytest.raises(MetricsUnavailable, match="cannot connect"):
        PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout=1).query_range("up", 0, 10, 1)
    with pytest.raises(ValueError, match="step must be a positive"):
        PrometheusProvider(run.prometheus_url).query_range("up", 0, 10, 0)
