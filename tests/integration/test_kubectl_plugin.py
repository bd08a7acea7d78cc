"""`kubectl modelrollout` through the real kubectl binary against the API emulator.

kubectl finds the plugin as `kubectl-modelrollout` on PATH (installed in the venv's bin folder by
the project's entry point), so every run below is `kubectl modelrollout VERB ...` with that folder
on PATH and KUBECONFIG pointing at the emulator — the way a user runs it. The operator is not
running: the tests write the status a command is judged against through the status subresource,
and check what the plugin wrote on the resource.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from canary.decision.spec import Condition, MetricStatus, Phase, RolloutStatus, Transition, Weights
from controller.kube.commands import COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION, command_patch
from controller.local.ports import free_port
from tests.fixtures.kube import start_kube_api
from tests.kube.server import EmulatorServer, write_kubeconfig

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "modelrollouts.modelrollout.io.yaml"
VENV_BIN = Path(sys.executable).parent
BASE = "/apis/modelrollout.io/v1alpha1"


# ---------------------------------------------------------------------------------------------
# helpers


def plugin_env(kubeconfig: Path | str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
        "KUBECONFIG": str(kubeconfig),
        "COLUMNS": "200",  # rich fits tables to 80 columns on a pipe; keep whole rows for the asserts
    }


def kubectl_binary() -> str:
    binary = shutil.which("kubectl", path=plugin_env("")["PATH"])
    assert binary is not None, "kubectl not found"
    return binary


def plugin_command(*args: str) -> list[str]:
    return [kubectl_binary(), "modelrollout", *args]


def run_plugin(kubeconfig: Path | str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        plugin_command(*args), capture_output=True, text=True, env=plugin_env(kubeconfig), timeout=timeout, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def status_doc(**fields: Any) -> dict[str, Any]:
    return RolloutStatus(**fields).model_dump(mode="json", by_alias=True, exclude_none=True)


def rollout_url(namespace: str, name: str) -> str:
    return f"{BASE}/namespaces/{namespace}/modelrollouts/{name}"


def create_rollout(kube_api: EmulatorServer, namespace: str, name: str = "iris", status: dict | None = None) -> dict:
    doc = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": f"{name}-model"},
            "analysis": {"metrics": [{"name": "p95", "template": "latency_p95", "maxIncrease": "50%"}]},
        },
    }
    created = kube_api.apply(doc)[0]
    if status is not None:
        created = write_status(kube_api, namespace, name, status)
    return created


def write_status(kube_api: EmulatorServer, namespace: str, name: str, status: dict) -> dict:
    with httpx.Client(base_url=kube_api.url, timeout=10.0) as http:
        answer = http.patch(
            f"{rollout_url(namespace, name)}/status",
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def read_rollout(kube_api: EmulatorServer, namespace: str, name: str = "iris") -> dict:
    with httpx.Client(base_url=kube_api.url, timeout=10.0) as http:
        answer = http.get(rollout_url(namespace, name))
    assert answer.status_code == 200, answer.text
    return answer.json()


def annotations(obj: dict) -> dict[str, str]:
    return obj["metadata"].get("annotations") or {}


CANARY = dict(
    phase=Phase.CANARY, stable_version="2", candidate_version="3", step=1, weights=Weights(stable=75, candidate=25)
)
PAUSED = dict(phase=Phase.PAUSED, paused_from=Phase.CANARY, stable_version="2", candidate_version="3", step=0)
ROLLED_BACK = dict(phase=Phase.ROLLED_BACK, stable_version="2", candidate_version="3", message="p95 too slow")
PROMOTED = dict(phase=Phase.SUCCEEDED, stable_version="3", candidate_version="3", previous_stable_version="2")


@pytest.fixture(scope="module")
def crd(kube_api: EmulatorServer) -> str:
    return kube_api.load_crds([CRD])[0]


@pytest.fixture
def ns(crd: str, kube_namespace: str) -> str:
    return kube_namespace


# ---------------------------------------------------------------------------------------------
# the command verbs


@pytest.mark.parametrize(
    ("args", "status", "verb"),
    [
        (["promote"], CANARY, "promote"),
        (["promote", "--full"], PAUSED, "promote-full"),
        (["abort"], CANARY, "abort"),
        (["pause"], CANARY, "pause"),
        (["resume"], PAUSED, "resume"),
        (["retry"], ROLLED_BACK, "retry"),
        (["undo"], PROMOTED, "undo"),
    ],
)
def test_each_verb_writes_the_documented_annotations(kube_api, ns, args, status, verb):
    before = create_rollout(kube_api, ns, status=status_doc(**status))
    result = run_plugin(kube_api.kubeconfig, args[0], "iris", "-n", ns, *args[1:])
    assert result.returncode == 0, result.stderr
    after = read_rollout(kube_api, ns)
    written = annotations(after)
    assert set(written) == {COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION}
    assert written[COMMAND_ANNOTATION] == verb
    assert written[COMMAND_ID_ANNOTATION]
    # The output names what was sent, the id, and how to watch; the patch shown is the one applied.
    assert f"{verb} sent to ModelRollout {ns}/iris (command-id {written[COMMAND_ID_ANNOTATION]})" in result.stdout
    shown = json.loads(next(line for line in result.stdout.splitlines() if "patch:" in line).split("patch:", 1)[1])
    assert shown == {"metadata": {"annotations": written}}
    assert f"kubectl modelrollout status iris -n {ns} --watch" in result.stdout
    # Only the annotations changed: spec and status are as they were.
    assert after["spec"] == before["spec"] and after["status"] == before["status"]


def test_plain_kubectl_does_the_same(kube_api, ns):
    """The plugin's write, `kubectl annotate` and `kubectl patch --type=merge` leave the same annotations."""
    for name in ("by-plugin", "by-annotate", "by-patch"):
        create_rollout(kube_api, ns, name, status=status_doc(**CANARY))
    assert run_plugin(kube_api.kubeconfig, "abort", "by-plugin", "-n", ns).returncode == 0
    kube_api.kubectl(
        "annotate", "mro", "by-annotate", "-n", ns, "--overwrite",
        f"{COMMAND_ANNOTATION}=abort", f"{COMMAND_ID_ANNOTATION}={time.time_ns()}",
    )  # fmt: skip
    kube_api.kubectl("patch", "mro", "by-patch", "-n", ns, "--type=merge", "-p", json.dumps(command_patch("abort")))
    written = {name: annotations(read_rollout(kube_api, ns, name)) for name in ("by-plugin", "by-annotate", "by-patch")}
    for found in written.values():
        assert set(found) == {COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION}
        assert found[COMMAND_ANNOTATION] == "abort"
    assert len({found[COMMAND_ID_ANNOTATION] for found in written.values()}) == 3
    # The plugin's write is a JSON merge patch, like `kubectl patch --type=merge`.
    patches = [
        r
        for r in list(kube_api.emulator)
        if r.method.value.upper() == "PATCH" and r.url.path == rollout_url(ns, "by-plugin")
    ]
    assert [r.headers.get("Content-Type") for r in patches] == ["application/merge-patch+json"]


def test_a_second_command_gets_a_new_id_and_says_what_it_replaced(kube_api, ns):
    create_rollout(kube_api, ns, status=status_doc(**CANARY))
    assert run_plugin(kube_api.kubeconfig, "pause", "iris", "-n", ns).returncode == 0
    first = annotations(read_rollout(kube_api, ns))[COMMAND_ID_ANNOTATION]
    result = run_plugin(kube_api.kubeconfig, "abort", "iris", "-n", ns)
    assert result.returncode == 0, result.stderr
    second = annotations(read_rollout(kube_api, ns))
    assert second[COMMAND_ANNOTATION] == "abort" and second[COMMAND_ID_ANNOTATION] != first
    assert f"replaced the pending command pause (id {first})" in result.stderr


@pytest.mark.parametrize(
    ("args", "status", "problem"),
    [
        (["promote"], None, "iris: promote: not possible in phase Idle"),
        (["resume"], CANARY, "iris: resume: not possible in phase Canary"),
        (["pause"], PAUSED, "iris: pause: not possible in phase Paused"),
        (["retry"], CANARY, "iris: retry: not possible in phase Canary"),
        (["abort"], ROLLED_BACK, "iris: abort: not possible in phase RolledBack"),
        (["undo"], dict(PROMOTED, previous_stable_version=None), "iris: undo: no promotion to undo"),
    ],
)
def test_a_command_that_cannot_apply_is_refused_and_nothing_is_written(kube_api, ns, args, status, problem):
    before = create_rollout(kube_api, ns, status=None if status is None else status_doc(**status))
    result = run_plugin(kube_api.kubeconfig, args[0], "iris", "-n", ns, *args[1:])
    one_line_error(result, problem)
    after = read_rollout(kube_api, ns)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert COMMAND_ANNOTATION not in annotations(after)


# ---------------------------------------------------------------------------------------------
# status


def post_event(
    kube_api: EmulatorServer, namespace: str, name: str, uid: str, reason: str, message: str, when: datetime
) -> None:
    event = {
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout",
            "name": name, "namespace": namespace, "uid": uid,
        },
        "reason": reason, "message": message, "type": "Warning" if reason == "RollingBack" else "Normal",
        "source": {"component": "modelrollout"},
        "firstTimestamp": when.isoformat(), "lastTimestamp": when.isoformat(), "eventTime": when.isoformat(),
    }  # fmt: skip
    with httpx.Client(base_url=kube_api.url, timeout=10.0) as http:
        answer = http.post(f"/api/v1/namespaces/{namespace}/events", json=event)
    assert answer.status_code == 201, answer.text


def test_status_shows_phase_weights_checks_conditions_history_and_events(kube_api, ns):
    t0 = datetime(2026, 1, 5, 9, 30, 0, tzinfo=UTC)
    status = status_doc(
        **CANARY,
        message="analysing step 2",
        checks=[
            MetricStatus(name="p95", verdict="pass", candidate=0.125, baseline=0.1, threshold="<= +50% of stable",
                         message="0.125 vs 0.1 (+25%)"),
            MetricStatus(name="errors", verdict="fail", candidate=0.07, threshold="<= 0.05", failures=1,
                         message="0.07 above 0.05"),
        ],
        conditions=[Condition(type="AnalysisPassing", status="False", reason="NotPassing", message="errors: fail")],
        history=[
            Transition(time=t0, from_phase=Phase.IDLE, to=Phase.SHADOW, version="3", reason="alias 'challenger' moved to v3"),
            Transition(time=t0 + timedelta(minutes=5), from_phase=Phase.SHADOW, to=Phase.CANARY, version="3",
                       reason="shadow checks passed"),
        ],
    )  # fmt: skip
    # The operator's framework keeps its own bookkeeping in the status: the plugin must read past it.
    status["kopf"] = {"progress": {"tick": {"started": "2026-01-05T09:30:00Z"}}}
    created = create_rollout(kube_api, ns, status=status)
    uid = created["metadata"]["uid"]
    post_event(
        kube_api,
        ns,
        "iris",
        uid,
        "StepAdvanced",
        "v3: all 1 checks passed; now canary step 2/3 (25%)",
        t0 + timedelta(minutes=6),
    )
    post_event(
        kube_api, ns, "iris", uid, "CanaryStarted", "v3: shadow checks passed", t0 + timedelta(minutes=5, seconds=1)
    )
    # Not this rollout's: another name, and an earlier rollout of the same name (another uid).
    post_event(kube_api, ns, "other", "uid-other", "Elsewhere", "not about iris", t0)
    post_event(kube_api, ns, "iris", "uid-of-a-deleted-iris", "Bygone", "from a deleted rollout of the same name", t0)

    result = run_plugin(kube_api.kubeconfig, "status", "iris", "-n", ns)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for fragment in (
        "iris  Canary step 2 (25%)",
        "stable v2   candidate v3   weights stable 75% / candidate 25%",
        "analysing step 2",
        "condition AnalysisPassing=False: errors: fail",
        "alias 'challenger' moved to v3",
        "shadow checks passed",
        "09:30:00",
        "now canary step 2/3 (25%)",
        "09:36:00",
    ):
        assert fragment in out, (fragment, out)
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ("p95", "errors")}
    assert all(part in rows["p95"] for part in ("pass", "0.125", "0.1", "<= +50% of stable"))
    assert all(part in rows["errors"] for part in ("fail", "0.07", "<= 0.05", "0.07 above 0.05"))
    # Events oldest first, and only this rollout's.
    assert out.index("CanaryStarted") < out.index("StepAdvanced")
    assert "Elsewhere" not in out and "Bygone" not in out


def test_status_of_a_fresh_rollout_and_a_pending_command(kube_api, ns):
    create_rollout(kube_api, ns)  # no status yet: the operator has not seen it
    result = run_plugin(kube_api.kubeconfig, "status", "iris", "-n", ns)
    assert result.returncode == 0, result.stderr
    assert "iris  Idle" in result.stdout and "stable v-   candidate v-" in result.stdout
    kube_api.kubectl("annotate", "mro", "iris", "-n", ns, f"{COMMAND_ANNOTATION}=retry", f"{COMMAND_ID_ANNOTATION}=42")
    result = run_plugin(kube_api.kubeconfig, "status", "iris", "-n", ns)
    assert "pending command: retry (id 42), not yet taken by the operator" in result.stdout


def test_namespace_comes_from_the_kubeconfig_context(kube_api, ns, tmp_path):
    create_rollout(kube_api, ns, status=status_doc(**CANARY))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_api.url, namespace=ns)
    result = run_plugin(kubeconfig, "status", "iris")
    assert result.returncode == 0, result.stderr
    assert "Canary step 2 (25%)" in result.stdout
    one_line_error(
        run_plugin(kubeconfig, "status", "iris", "--context", "prod"), "no context named 'prod' (known: emulator)"
    )


def test_get_mro_shows_the_printer_columns(kube_api, ns):
    create_rollout(kube_api, ns, status=status_doc(**CANARY))
    create_rollout(kube_api, ns, "fresh")
    table = kube_api.kubectl("get", "mro", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "STABLE", "CANDIDATE", "PHASE", "WEIGHT", "AGE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["iris"][:6] == ["iris", "iris-model", "2", "3", "Canary", "25"]
    assert rows["fresh"][:2] == ["fresh", "fresh-model"]


# ---------------------------------------------------------------------------------------------
# status --watch


class Watcher:
    """`kubectl modelrollout status --watch` in the background, its output read as it comes."""

    def __init__(self, kubeconfig: Path, *args: str):
        self.process = subprocess.Popen(
            plugin_command("status", *args, "--watch"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=plugin_env(kubeconfig),
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, fragment: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(fragment in line for line in self.seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{fragment!r} not printed within {timeout}s: {''.join(self.seen)}"
            try:
                self.seen.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                pass

    def finish(self, timeout: float = 15.0) -> tuple[int, str, str]:
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.process.stderr is not None
        return code, "".join(self.seen), self.process.stderr.read()


@pytest.mark.parametrize(
    ("final", "code"),
    [(dict(PROMOTED, weights=Weights(stable=100, candidate=0)), 0), (ROLLED_BACK, 1)],
)
def test_watch_follows_the_rollout_until_it_rests(kube_api, ns, final, code):
    create_rollout(kube_api, ns, status=status_doc(**CANARY))
    watcher = Watcher(kube_api.kubeconfig, "iris", "-n", ns, "--timeout", "30s")
    try:
        watcher.wait_for("Canary step 2 (25%)")
        # Changes the operator would write on the way, from another thread than the watcher's.
        writer = threading.Thread(
            target=lambda: [
                write_status(
                    kube_api, ns, "iris", status_doc(**dict(CANARY, step=2, weights=Weights(stable=50, candidate=50)))
                ),
                write_status(kube_api, ns, "iris", status_doc(**final)),
            ]
        )
        writer.start()
        writer.join(10)
    finally:
        returncode, out, err = watcher.finish()
    assert returncode == code, (out, err)
    assert "Traceback" not in err
    assert (
        out.index("Canary step 2 (25%)") < out.index("Canary step 3 (50%)") < out.index(f"iris  {final['phase'].value}")
    )


def test_watch_gives_up_at_the_timeout(kube_api, ns):
    create_rollout(kube_api, ns, status=status_doc(**CANARY))
    started = time.monotonic()
    result = run_plugin(kube_api.kubeconfig, "status", "iris", "-n", ns, "--watch", "--timeout", "2s")
    took = time.monotonic() - started
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert 2.0 <= took < 10.0
    assert result.stderr.strip() == f"timed out after 2s: {ns}/iris is still Canary"
    assert result.stdout.count("Canary step 2 (25%)") == 1


@pytest.mark.parametrize(("status", "code"), [(PROMOTED, 0), (ROLLED_BACK, 1), (None, 0)])
def test_watch_of_a_rollout_at_rest_prints_once_and_exits(kube_api, ns, status, code):
    create_rollout(kube_api, ns, status=None if status is None else status_doc(**status))
    result = run_plugin(kube_api.kubeconfig, "status", "iris", "-n", ns, "--watch", timeout=15)
    assert result.returncode == code, result.stderr
    assert result.stdout.count("iris  ") == 1


def test_watch_waits_for_a_pending_command_on_a_rollout_at_rest(kube_api, ns):
    """A `retry` sent to a RolledBack rollout has not happened yet: the watch does not end on it."""
    create_rollout(kube_api, ns, status=status_doc(**ROLLED_BACK))
    assert run_plugin(kube_api.kubeconfig, "retry", "iris", "-n", ns).returncode == 0
    result = run_plugin(kube_api.kubeconfig, "status", "iris", "-n", ns, "--watch", "--timeout", "1s")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "pending command: retry" in result.stdout


def test_bad_watch_options(kube_api, ns):
    create_rollout(kube_api, ns)
    one_line_error(
        run_plugin(kube_api.kubeconfig, "status", "iris", "-n", ns, "--timeout", "5s"),
        "--timeout applies to --watch only",
    )
    one_line_error(
        run_plugin(kube_api.kubeconfig, "status", "iris", "-n", ns, "--watch", "--timeout", "soon"),
        "--timeout: invalid duration 'soon'",
    )


# ---------------------------------------------------------------------------------------------
# what goes wrong


def test_unknown_rollout_names_the_namespace_and_the_known_ones(kube_api, ns):
    create_rollout(kube_api, ns, "iris")
    create_rollout(kube_api, ns, "wine")
    expected = f"no ModelRollout named 'irsi' in namespace '{ns}' (known: iris, wine)"
    one_line_error(run_plugin(kube_api.kubeconfig, "status", "irsi", "-n", ns), expected)
    one_line_error(run_plugin(kube_api.kubeconfig, "abort", "irsi", "-n", ns), expected)
    one_line_error(
        run_plugin(kube_api.kubeconfig, "status", "iris", "-n", f"{ns}-empty"),
        f"no ModelRollout named 'iris' in namespace '{ns}-empty' (known: none)",
    )


def test_missing_crd_says_to_install_it(tmp_path):
    private = start_kube_api(tmp_path)  # the CRD is cluster-wide: the shared emulator must keep it
    try:
        line = one_line_error(
            run_plugin("/nonexistent/kubeconfig", "promote", "iris", "--kubeconfig", str(private.kubeconfig)),
            "the ModelRollout CRD (modelrollouts.modelrollout.io) is not installed",
            private.url,
            "kubectl apply -f manifests/crd/",
        )
        assert "iris" not in line
    finally:
        private.stop()


def test_unreachable_api_server_names_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
    for args in (["status", "iris"], ["status", "iris", "--watch"], ["abort", "iris"]):
        one_line_error(
            run_plugin(kubeconfig, *args, timeout=20), f"cannot reach the Kubernetes API server at {url}", "refused"
        )


def test_missing_or_broken_kubeconfig(tmp_path):
    broken = tmp_path / "broken"
    broken.write_text("clusters: [unclosed\n")
    one_line_error(run_plugin(broken, "status", "iris"), f"kubeconfig {broken}: malformed YAML at line 2")
    broken.write_text("- just\n- a list\n")
    one_line_error(run_plugin(broken, "status", "iris"), f"kubeconfig {broken}: not a kubeconfig")
    missing = tmp_path / "absent"
    one_line_error(run_plugin(missing, "status", "iris"), f"no kubeconfig found at {missing} (KUBECONFIG)")
    one_line_error(
        run_plugin(missing, "status", "iris", "--kubeconfig", str(tmp_path / "other")),
        f"no kubeconfig found at {tmp_path / 'other'} (--kubeconfig)",
    )


def test_lint_still_checks_files(tmp_path):
    good = tmp_path / "rollout.yaml"
    good.write_text(
        "apiVersion: modelrollout.io/v1alpha1\nkind: ModelRollout\nmetadata: {name: iris}\n"
        "spec: {model: {name: iris-model}}\n"
    )
    result = run_plugin(tmp_path / "absent", "lint", "-f", str(good))
    assert result.returncode == 0 and "iris: ok (0 checks)" in result.stdout
    good.write_text(good.read_text().replace("spec: {", "spec: {canary: {steps: [50, 10]}, "))
    one_line_error(run_plugin(tmp_path / "absent", "lint", "-f", str(good)), "spec.canary.steps", "must increase")
