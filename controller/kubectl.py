"""`kubectl modelrollout`: the kubectl plugin (the `kubectl-modelrollout` executable on PATH).

Today it checks rollout files (`kubectl modelrollout lint -f rollout.yaml`), with the same
validation the API server will apply once the CRD is installed. The verbs that act on a cluster
(status, promote, abort, pause, resume, retry, undo) arrive with the Kubernetes operator; on the
local platform the same verbs are `modelrollout promote NAME` and friends.
"""

from __future__ import annotations

import typer

from controller import cli

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Manage ModelRollouts with kubectl.")
app.command("lint")(cli.lint)


@app.callback()
def _root() -> None:
    """Manage ModelRollouts with kubectl."""
