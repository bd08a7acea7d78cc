"""The local model server: a real KServe server process serving a real sklearn model from disk.

One server is started per module (about 3-4 s: ``import kserve`` ~1.2 s, ``import mlflow.pyfunc``
~0.6 s, loading the sklearn model ~1.5 s). Process helpers: tests/fixtures/modelserver.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.local.ports import free_port

from tests.fixtures.modelserver import (
    REPO,
    STOP_TIMEOUT,
    Process,
    start_model_servers,
    save_sklearn,
    iris,
    fit_logistic,
)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_estimator() -> Any:
    return fit_logistic()


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, iris_estimator: Any) -> Iterator[Process]:
    base = tmp_path_factory.mktemp("modelserver")
    path = save_sklearn(iris_estimator, base / "iris-model")
    (proc,) = start_model_servers([("iris", path, "7")], base)
    print(f"\nmodel server ready {proc.ready_seconds:.2f} s after spawn")
    yield proc
    proc.stop()
    assert proc.popen.returncode is not None


def post(url: str, body: Any = None, content: bytes | None = None, **kwargs: Any) -> httpx.Response:
    if content is not None:
        return httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=10.0, **kwargs)
    return httpx.post(url, json=body, timeout=10.0, **kwargs)


# --- happy paths ----------------------------------------------------------------------------------


def test_readiness_endpoints(model_server: Process) -> None:
    assert httpx.get(model_server.url + "/v2/health/ready").status_code == 200
    answer = httpx.get(model_server.url + "/v1/models/iris")
    assert answer.status_code == 200
    assert answer.json() == {"name": "iris", "ready": True}


def test_binds_loopback_only(model_server: Process) -> None:
    """KServe binds 0.0.0.0 on its own; the local platform must stay on 127.0.0.1."""
    port = int(model_server.url.rsplit(":", 1)[1])
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
            listening.add(address)
    assert listening == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_v1_predictions_match_the_model(model_server: Process, iris_estimator: Any) -> None:
    features, _ = iris()
    rows = features[::10]
    answer = post(model_server.url + "/v1/models/iris:predict", {"instances": rows.tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": iris_estimator.predict(rows).tolist()}


def test_v1_accepts_integers_for_float_features(model_server: Process, iris_estimator: Any) -> None:
    answer = post(model_server.url + "/v1/models/iris:predict", {"instances": [[5, 3, 1, 0], [7, 3, 6, 2]]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == iris_estimator.predict([[5, 3, 1, 0], [7, 3, 6, 2]]).tolist()


def test_v2_round_trip(model_server: Process, iris_estimator: Any) -> None:
    features, _ = iris()
    rows = features[:3]
    body = {
        "id": "req-1",
        "inputs": [{"name": "features", "shape": [3, 4], "datatype": "FP64", "data": rows.reshape(-1).tolist()}],
    }
    answer = post(model_server.url + "/v2/models/iris/infer", body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["model_name"] == "iris"
    assert got["model_version"] == "7"
    assert got["id"] == "req-1"
    (output,) = got["outputs"]
    assert output["shape"] == [3]
    assert output["datatype"] == "INT64"
    assert output["data"] == iris_estimator.predict(rows).tolist()


def test_v2_nested_data_and_fp32(model_server: Process, iris_estimator: Any) -> None:
    rows = [[6.3, 3.3, 6.0, 2.5], [5.0, 3.6, 1.4, 0.2]]
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": rows}]}
    answer = post(model_server.url + "/v2/models/iris/infer", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == iris_estimator.predict(rows).tolist()


# --- bad input ------------------------------------------------------------------------------------

V1_BAD = [
    pytest.param(b"not json", "Unrecognized request format", id="not-json"),
    pytest.param(b"[1, 2]", "expected a JSON object", id="array-body"),
    pytest.param(b'{"rows": [[1, 2, 3, 4]]}', 'missing "instances"', id="no-instances"),
    pytest.param(b'{"instances": "x"}', '"instances" to be a list', id="instances-string"),
    pytest.param(b'{"instances": []}', "non-empty list", id="instances-empty"),
    pytest.param(b'{"instances": [[1, 2, 3, 4], [1, 2]]}', "different lengths", id="ragged"),
    pytest.param(b'{"instances": [[1, 2, 3, 4], 5]}', "mixes lists with scalars", id="mixed"),
    pytest.param(b'{"instances": [[[1], 2, 3, 4]]}', "scalars, not nested", id="nested"),
    pytest.param(b'{"instances": [[5.1, 3.5, 1.4]]}', "3 features", id="too-few-features"),
    pytest.param(b'{"instances": [["a", "b", "c", "d"]]}', "model rejected the input", id="strings"),
]


@pytest.mark.parametrize(("body", "message"), V1_BAD)
def test_v1_malformed_payload_is_400(model_server: Process, body: bytes, message: str) -> None:
    answer = post(model_server.url + "/v1/models/iris:predict", content=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert "Traceback" not in answer.text


V2_BAD = [
    pytest.param(b"{nope", "not valid JSON", id="not-json"),
    pytest.param(b'{"inputs": "x"}', "inputs", id="inputs-string"),
    pytest.param(b'{"inputs": [{"name": "x"}]}', "inputs.0.shape", id="missing-fields"),
    pytest.param(b'{"inputs": []}', "at least one tensor", id="no-tensors"),
    pytest.param(
        b'{"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2]}]}',
        "does not match shape",
        id="shape-mismatch",
    ),
    pytest.param(
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FLOAT", "data": [1, 2, 3, 4]}]}',
        "unknown datatype 'FLOAT'",
        id="bad-datatype",
    ),
    pytest.param(
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ["a", "b", "c", "d"]}]}',
        "could not convert",
        id="strings-as-fp64",
    ),
    pytest.param(
        b'{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}',
        "3 features",
        id="too-few-features",
    ),
]


@pytest.mark.parametrize(("body", "message"), V2_BAD)
def test_v2_malformed_payload_is_400(model_server: Process, body: bytes, message: str) -> None:
    answer = post(model_server.url + "/v2/models/iris/infer", content=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert "Traceback" not in answer.text


def test_unknown_model_is_404(model_server: Process) -> None:
    answer = post(model_server.url + "/v1/models/other:predict", {"instances": [[1, 2, 3, 4]]})
    assert answer.status_code == 404
    assert "other" in answer.json()["error"]


def test_server_still_answers_after_bad_requests(model_server: Process) -> None:
    assert post(model_server.url + "/v1/models/iris:predict", content=b"{").status_code == 400
    assert post(model_server.url + "/v1/models/iris:predict", {"instances": [[5, 3, 1, 0]]}).status_code == 200


# --- a model that cannot be loaded ----------------------------------------------------------------


def test_model_that_fails_to_load_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "MLmodel").write_text("this is: [not an MLmodel\n")
    unreachable = f"http://127.0.0.1:{free_port()}"
    fast_fail = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    cases = [
        # (model URI, extra env, text the message must hold besides the URI)
        (str(tmp_path / "missing"), {}, "No such"),
        (str(broken), {}, "Error"),
        ("models:/iris/1", {"MLFLOW_TRACKING_URI": unreachable, **fast_fail}, "Connection refused"),
        ("models:/iris/1", {}, "MLFLOW_TRACKING_URI is not set"),
    ]
    base_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    started = time.monotonic()
    # Side by side: each pays ~2 s of imports before it fails.
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller.local.modelserver",
                "--name",
                "iris",
                "--model-uri",
                uri,
                "--port",
                str(free_port()),
            ],
            # Run from an empty dir so a stray ./mlflow.db would show up below.
            cwd=tmp_path,
            env={**base_env, "PYTHONPATH": str(REPO), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        for uri, env, _ in cases
    ]
    try:
        for (uri, _, cause), run in zip(cases, runs, strict=True):
            _, stderr = run.communicate(timeout=120)
            lines = [line for line in stderr.decode().splitlines() if line.strip()]
            assert run.returncode == 1, stderr.decode()
            last = lines[-1]
            assert last.startswith("modelserver iris: cannot load model "), last
            assert repr(uri) in last
            assert cause in last, last
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait(timeout=STOP_TIMEOUT)
    # No stray ./mlflow.db from resolving models:/ without a tracking server.
    assert not (tmp_path / "mlflow.db").exists()
    print(f"\nfour failing loads took {time.monotonic() - started:.2f} s side by side")


def test_bad_arguments_exit_2() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "controller.local.modelserver", "--name", "iris"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert b"--model-uri" in run.stderr
