"""What scripts and shells get from the command lines: `status -o json|yaml`, `status --watch` with
its exit codes, `--version`, shell completion, and help that shows every default."""

from __future__ import annotations

import json
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from canary.decision.spec import Phase, RolloutStatus
from controller.cli.kubectl import app as kubectl_app
from controller.cli.main import app
from controller.local.home import LocalHome
from controller.local.state import StateStore

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    store = StateStore(LocalHome.resolve(tmp_path).state_dir)
    store.save("iris", RolloutStatus(phase=Phase.CANARY, stable_version="1", candidate_version="2", step=0))
    store.save("wine", RolloutStatus(phase=Phase.SUCCEEDED, stable_version="4"))
    return tmp_path


def test_status_as_json_and_yaml(home: Path) -> None:
    one = runner.invoke(app, ["status", "iris", "--home", str(home), "-o", "json"])
    assert one.exit_code == 0, one.output
    document = json.loads(one.output)
    assert document["name"] == "iris" and document["status"]["phase"] == "Canary"
    assert document["status"]["candidateVersion"] == "2" and document["events"] == []
    every = runner.invoke(app, ["status", "--home", str(home), "--output", "yaml"])
    assert every.exit_code == 0, every.output
    assert [(d["name"], d["status"]["phase"]) for d in yaml.safe_load(every.output)] == [("iris", "Canary"), ("wine", "Succeeded")]
    empty = runner.invoke(app, ["status", "--home", str(home / "nothing"), "-o", "json"])
    assert empty.exit_code == 0 and json.loads(empty.output) == []
    bad = runner.invoke(app, ["status", "--home", str(home), "-o", "xml"])
    assert bad.exit_code == 2 and "Invalid value for '-o' / '--output'" in bad.output


def test_watch_exits_with_how_the_rollout_came_to_rest(home: Path) -> None:
    store = StateStore(LocalHome.resolve(home).state_dir)

    def finish() -> None:
        time.sleep(0.6)
        store.save("iris", RolloutStatus(phase=Phase.ROLLED_BACK, stable_version="1", message="p95 too slow"))

    threading.Thread(target=finish, daemon=True).start()
    result = runner.invoke(app, ["status", "iris", "--home", str(home), "--watch", "-o", "json", "--timeout", "30s"])
    assert result.exit_code == 1, result.output  # RolledBack
    phases = [json.loads(line)["status"]["phase"] for line in result.output.splitlines()]
    assert phases == ["Canary", "RolledBack"]  # one line per change, not per poll
    done = runner.invoke(app, ["status", "wine", "--home", str(home), "--watch"])
    assert done.exit_code == 0 and "Succeeded" in done.output


def test_watch_gives_up_at_the_timeout_and_refuses_what_makes_no_sense(home: Path) -> None:
    started = time.monotonic()
    result = runner.invoke(app, ["status", "iris", "--home", str(home), "-w", "--timeout", "1s"])
    assert result.exit_code == 3 and "timed out: iris is still Canary" in result.output
    assert time.monotonic() - started < 10
    for args, complaint in (
        (["status", "--home", str(home), "--watch"], "--watch follows one rollout: name it"),
        (["status", "iris", "--home", str(home), "--timeout", "1m"], "--timeout applies to --watch only"),
        (["status", "iris", "--home", str(home), "--watch", "--timeout", "soon"], "--timeout"),
    ):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and complaint in refused.output, (args, refused.output)


@pytest.mark.parametrize(("cli", "prog"), [(app, "modelrollout"), (kubectl_app, "kubectl-modelrollout")])
def test_version_and_completion(cli: object, prog: str) -> None:
    version = runner.invoke(cli, ["--version"])  # type: ignore[arg-type]
    assert version.exit_code == 0 and version.output.strip() == f"modelrollout {metadata.version('modelrollout')}"
    # What bash asks the installed completion for on `<prog> st<TAB>` (the shell's detection, which
    # --show-completion needs, depends on the parent process: not asked here).
    variable = f"_{prog.replace('-', '_').upper()}_COMPLETE"
    asked = {variable: "complete_bash", "COMP_WORDS": f"{prog} st", "COMP_CWORD": "1"}
    completion = runner.invoke(cli, [], env=asked, prog_name=prog)  # type: ignore[arg-type]
    assert completion.exit_code == 0 and completion.output.split() == ["status", "start"]


@pytest.mark.parametrize(("command", "default"), [
    (["local", "up"], "[default: ./.modelrollout]"),
    (["local", "up"], "[default: 1s, or the one recorded]"),
    (["operator"], "[default: all]"),
    (["shadow-server"], "[default: 0 and ±1, 2, 5 × 10^-2 … 10^5]"),
    (["demo"], "[default: a fresh temporary one]"),
    (["start"], "[default: `local up`'s]"),
])  # fmt: skip
def test_help_shows_every_default(command: list[str], default: str) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert default in " ".join(result.output.split())
