"""What the two command lines share: `modelrollout` (main.py) and `kubectl modelrollout` (kubectl.py).

Their consoles, the one-line error plumbing (every error a user can cause or meet ends in one line
on stderr naming the cause and exit 2, never a traceback), log set-up, reading rollout files and
`lint`, which both offer with the same rules: the engine's, and the CRD schema's as the API
server applies it. Kept apart from both so that neither imports the
other.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib import metadata
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from canary.decision.spec import ModelRef, ModelRollout, Phase, SpecError, load_rollouts
from controller.kube import crd
from controller.kube.rollout_client import RolloutRequestError
from controller.local.home import ServicesNotRunning
from controller.local.mlflow_server import MlflowServerError
from controller.local.prometheus_server import PrometheusServerError
from controller.local.state import StateError

console = Console(soft_wrap=True)  # long lines (paths, reasons) stay whole: greppable, copyable
errors = Console(stderr=True, soft_wrap=True)

FileOption = Annotated[Path, typer.Option("-f", "--file", help="YAML file with one or more ModelRollout documents")]


# `status --watch` exit codes (both command lines): how the rollout came to rest, or that it did not in time.
REST_EXIT = {Phase.SUCCEEDED: 0, Phase.IDLE: 0, Phase.ROLLED_BACK: 1, Phase.ABORTED: 1}
TIMEOUT_EXIT = 3


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"


class UsageError(Exception):
    """A command used wrongly (unknown rollout, bad option value)."""


# Errors that are the user's or the environment's, not bugs: one line, exit 2.
EXPECTED = (
    SpecError, ServicesNotRunning, StateError, MlflowServerError, PrometheusServerError, RolloutRequestError, FileNotFoundError,
)


def one_line_errors(func: Callable) -> Callable:
    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (*EXPECTED, UsageError) as err:
            text = str(err) if not isinstance(err, FileNotFoundError) else f"{err.filename}: file not found"
            for line in text.splitlines() or [type(err).__name__]:
                errors.print(f"[red]error:[/red] {escape(line)}", highlight=False, markup=True)  # text is not markup
            raise typer.Exit(2) from None

    return wrapper


class _StderrHandler(logging.StreamHandler):
    """Writes each record to sys.stderr as it is at that moment, like the rich console does: a
    stream bound once goes stale when something swaps sys.stderr (a test runner invoking the CLI
    closes its capture afterwards, and every later record became a "Logging error" printout)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - whatever sys.stderr is
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it
        pass


def _print_version(value: bool) -> None:
    if value:
        console.print(f"modelrollout {metadata.version('modelrollout')}", highlight=False)
        raise typer.Exit()


VersionOption = Annotated[
    bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit")
]


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar="MODELROLLOUT_LOG_FORMAT",
        help="text: a line per record; json: a JSON object per line",
    ),
]
LogLevelOption = Annotated[
    Optional[LogLevel],
    typer.Option("--log-level", envvar="MODELROLLOUT_LOG_LEVEL", help="The least severe records logged \\[default: info]"),
]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, message, and
    the traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    verbose: bool = False, level: LogLevel | None = None, log_format: LogFormat = LogFormat.TEXT
) -> None:
    """`level` wins over `verbose` (debug); json never goes through the terminal renderer."""
    handler: logging.Handler
    if log_format is LogFormat.JSON:
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
    elif errors.is_terminal:
        handler = RichHandler(console=errors, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        # A file or a pipe (a service's log, kubectl logs): one line per record, never wrapped.
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    chosen = level.upper() if level is not None else ("DEBUG" if verbose else "INFO")
    logging.basicConfig(level=chosen, handlers=[handler], force=True)
    # A library's warning is a record too, never a stray stderr line. Released first: a second
    # call (a test, an embedding program) would otherwise keep whatever hook is there now.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    for noisy in ("urllib3", "httpx", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def read_rollouts(file: Path) -> list[ModelRollout]:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as err:
        raise SpecError(f"{file}: not UTF-8 text (byte {err.start}): a rollout file is YAML") from None
    except OSError as err:  # a directory, no permission: one line naming the file, not a traceback
        raise SpecError(f"{file}: cannot be read: {err.strerror or err}") from None
    rollouts = load_rollouts(text, str(file))
    # The engine's model reads leniently (a step "10" becomes 10); the API server would refuse what
    # the CRD's schema does not allow, so a file that passes here also applies to a cluster.
    problems = [
        f"{file}: {(doc.get('metadata') or {}).get('name', f'document {i + 1}')}: {problem}"
        for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d is not None)
        for problem in crd.schema_problems(doc)
    ]
    if problems:
        raise SpecError("\n".join(problems))
    return rollouts


@one_line_errors
def lint(file: FileOption) -> None:
    """Check a rollout file without running it."""
    rollouts = read_rollouts(file)
    for rollout in rollouts:
        console.print(f"{file}: {rollout.metadata.name}: ok ({len(rollout.spec.analysis.metrics)} checks)")


def move_candidate_alias(rollout: str, model: ModelRef, version: str, mlflow_uri: str) -> bool:
    """`start` for both command lines: the rollout's candidate alias onto `version` in MLflow;
    True if it moved. Every refusal is a UsageError naming the cause."""
    from registry.candidate import propose
    from registry.connection import connect
    from registry.errors import RegistryError

    if model.candidate_stage is not None:
        raise UsageError(
            f"{rollout} follows the stage {model.candidate_stage!r}, not an alias: move version {version} to that stage in MLflow"
        )
    try:
        client = connect(mlflow_uri, timeout_s=10, max_retries=0)
        return propose(client, model.name, version, model.candidate_alias, model.stable_alias)
    except (RegistryError, ValueError) as err:
        raise UsageError(str(err)) from None
