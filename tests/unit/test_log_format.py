"""`--log-format` and `--log-level` of the long-running commands (operator, local run, shadow-server):
json is one object per line whatever the record holds, text off a terminal one line per record."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from controller.cli.command_line import JsonFormatter, LogFormat, LogLevel, configure_logging
from controller.cli.main import app


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def emitted(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_json_is_one_object_per_line_with_the_traceback_inside(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format=LogFormat.JSON)
    log = logging.getLogger("modelrollout.test")
    log.info("rollout %s: %s", "iris", "line one\nline two — ünïcode")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("tick failed")
    warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
    lines = emitted(capsys)
    records = [json.loads(line) for line in lines]
    assert len(records) == 3, lines
    first, failure, warning = records
    assert first["message"] == "rollout iris: line one\nline two — ünïcode"
    assert first["level"] == "info" and first["logger"] == "modelrollout.test" and first["time"].endswith("+00:00")
    assert failure["level"] == "error" and "ValueError: boom" in failure["exception"]
    assert warning["logger"] == "py.warnings" and "a library's deprecation" in warning["message"]


def test_text_off_a_terminal_is_one_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stderr.isatty()
    configure_logging(log_format=LogFormat.TEXT)
    logging.getLogger("modelrollout.test").warning("canary at %d%%", 20)
    [line] = emitted(capsys)
    assert line.endswith(" WARNING canary at 20%")


@pytest.mark.parametrize(("verbose", "level", "expected"), [
    (False, None, logging.INFO),
    (True, None, logging.DEBUG),
    (True, LogLevel.WARNING, logging.WARNING),  # the level asked for wins over --verbose
    (False, LogLevel.ERROR, logging.ERROR),
])  # fmt: skip
def test_the_level_asked_for_is_the_roots(verbose: bool, level: LogLevel | None, expected: int) -> None:
    configure_logging(verbose, level, LogFormat.JSON)
    assert logging.getLogger().level == expected
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)


@pytest.mark.parametrize("command", [["operator"], ["local", "run", "-f", "x.yaml"], ["shadow-server"]])
@pytest.mark.parametrize(("option", "value"), [("--log-format", "xml"), ("--log-level", "verbose")])
def test_an_unknown_format_or_level_is_refused_naming_the_choices(command: list[str], option: str, value: str) -> None:
    result = CliRunner().invoke(app, [*command, option, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output and value in result.output


def test_the_environment_chooses_the_format_when_no_flag_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELROLLOUT_LOG_FORMAT", "yaml")
    result = CliRunner().invoke(app, ["shadow-server"])
    assert result.exit_code == 2 and "Invalid value for '--log-format'" in result.output
