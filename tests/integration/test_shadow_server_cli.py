"""`modelrollout shadow-server`: its flags are checked before anything listens, and a server
started with all of them answers."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from controller.cli.main import app
from tests.fixtures.prometheus import free_port

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--prediction-buckets", "1,0"], "bucket bounds must increase strictly"),
        (["--prediction-buckets", "1,x"], "--prediction-buckets"),
        (["--max-classes", "0"], "--max-classes"),
        (["--mirror-queue-size", "0"], "--mirror-queue-size"),
        (["--shadow-timeout", "0"], "--shadow-timeout"),
        (["--feedback-ttl", "-1"], "--feedback-ttl"),
        (["--feedback-max-entries", "0"], "--feedback-max-entries"),
        (["--pending-max", "0"], "--pending-max"),
        (["--pending-ttl", "0"], "--pending-ttl"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(args: list[str], complaint: str) -> None:
    result = runner.invoke(app, ["shadow-server", "--port", str(free_port()), *args])
    assert result.exit_code == 2
    # Rich boxes the message and wraps it: compare the words.
    assert complaint in " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def test_a_server_started_with_every_flag_answers() -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "controller.cli", "shadow-server", "--port", str(port),
        "--max-classes", "3", "--prediction-buckets=-1,0,1", "--mirror-queue-size", "10",
        "--shadow-timeout", "2", "--feedback-ttl", "60", "--feedback-max-entries", "100",
        "--pending-max", "50", "--pending-ttl", "5",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the shadow-server did not answer /healthz within 30 s"
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/admin/shadows", timeout=2).json() == []
    finally:
        process.terminate()
        process.wait(10)
