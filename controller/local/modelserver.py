"""One MLflow model version served by KServe's own Python model server.

Run as ``python -m controller.local.modelserver --name iris --model-uri URI --port 8081 [--version 3]
[--max-body-bytes N]``.

The local platform starts one such process per model version. It is the real KServe server
(``kserve.Model`` + ``kserve.ModelServer``), so it speaks exactly the protocols an
InferenceService speaks on a cluster:

- V1: ``POST /v1/models/NAME:predict`` ``{"instances": [[...], ...]}`` -> ``{"predictions": [...]}``
- V2: ``POST /v2/models/NAME/infer`` ``{"inputs": [{name, shape, datatype, data}]}`` -> ``{"outputs": [...]}``
- readiness: ``GET /v2/health/ready``, ``GET /v1/models/NAME``; KServe's metrics on ``/metrics``.

The model is loaded *before* the server starts: a model that cannot be loaded makes the process
exit with status 1 and one line on stderr naming the URI and the cause, which the controller
copies into the rollout's status as the reason.

Payloads a client got wrong are answered 400 with a message (never a 500 with a traceback);
a model that fails on well-formed input is a 500 naming the exception. A body over
``--max-body-bytes`` is answered 413 before KServe reads it (see DEFAULT_MAX_BODY_BYTES).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from controller.platform import failure_line

# The URI schemes that need an MLflow tracking server to resolve.
_REGISTRY_SCHEMES = ("models:", "runs:", "mlflow-artifacts:")
# Exit status of a model that could not be loaded (argparse uses 2 for bad arguments).
EXIT_LOAD_FAILED = 1
# KServe's server reads a body whole, then parses it (JSON -> Python objects -> a DataFrame): one
# request holds ~18x its size at the peak. Measured on this server with iris rows (V1): a 16 MiB body
# raised peak RSS by ~290 MB, a 64 MiB one by ~1.2 GB, which a laptop running a few rollouts cannot
# give per request. 16 MiB is still far above what the local platform sends it: the router in front
# forwards at most 1 MiB by default, and KServe's own gRPC endpoint takes at most 8 MiB a message.
# Models fed images or large batches raise it with --max-body-bytes.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

log = logging.getLogger("modelrollout.modelserver")


class ModelLoadError(RuntimeError):
    """The model at a URI could not be loaded; the message is the one-line reason."""


def load_pyfunc(model_uri: str) -> Any:
    """Load a pyfunc model, or raise ModelLoadError naming the URI and the cause.

    A registry URI without MLFLOW_TRACKING_URI is refused up front: MLflow would otherwise
    resolve it against a fresh ``./mlflow.db`` and fail with a confusing "not found".
    """
    if model_uri.startswith(_REGISTRY_SCHEMES) and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ModelLoadError(
            f"cannot load model {model_uri!r}: MLFLOW_TRACKING_URI is not set, so the URI cannot be resolved"
        )
    # An unreachable tracking server must fail in seconds, not after MLflow's default minutes
    # of retries: the rollout is waiting for this process. The controller may set its own values.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    import mlflow.pyfunc

    from registry.errors import credentials_hidden

    try:
        return mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # noqa: BLE001 - any failure is reported as the load's cause
        # MLflow quotes the tracking URI whole when it cannot reach it; a token in it must not reach
        # the rollout's status (the local platform passes user:password apart, a bare token it cannot).
        cause = credentials_hidden(failure_line(str(exc)))
        raise ModelLoadError(f"cannot load model {credentials_hidden(model_uri)!r}: {type(exc).__name__}: {cause}") from exc


# --- payloads -> what pyfunc expects ------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """What the model's signature says about its input, as far as JSON payloads need it.

    A model logged with named columns rejects a bare numpy array, so rows must become a
    DataFrame with those names. And JSON has one integer and one float type: MLflow's schema
    enforcement refuses int64 for a double column or float64 for a float32 tensor, so numbers
    are cast to the signature's types first. A model without a signature takes the data as is.
    """

    columns: list[str] | None = None
    column_types: list[np.dtype] | None = None
    tensor_type: np.dtype | None = None

    @classmethod
    def of(cls, pyfunc_model: Any) -> InputSpec:
        try:
            schema = pyfunc_model.metadata.get_input_schema()
        except Exception:  # noqa: BLE001 - a model without metadata simply has no schema
            return cls()
        if schema is None:
            return cls()
        try:
            types = [np.dtype(t) for t in schema.numpy_types()]
        except Exception:  # noqa: BLE001 - types numpy cannot express (objects, arrays): no casting
            types = None
        if schema.is_tensor_spec():
            return cls(tensor_type=types[0] if types and len(types) == 1 else None)
        if not schema.has_input_names():
            return cls()
        names = list(schema.input_names())
        return cls(columns=names, column_types=types if types and len(types) == len(names) else None)

    def conform(self, data: np.ndarray | pd.DataFrame) -> np.ndarray | pd.DataFrame:
        if isinstance(data, np.ndarray) and self.tensor_type is not None:
            return _cast_numbers(data, self.tensor_type)
        if isinstance(data, pd.DataFrame) and self.columns and self.column_types:
            for name, dtype in zip(self.columns, self.column_types, strict=True):
                if name in data.columns:
                    data[name] = _cast_numbers(data[name].to_numpy(), dtype)
        return data


def _cast_numbers(values: np.ndarray, target: np.dtype) -> np.ndarray:
    """Numbers to the signature's numeric type when that loses nothing that JSON could carry."""
    if values.dtype == target or values.dtype.kind not in "iuf" or target.kind not in "iuf":
        return values
    if target.kind == "f":
        return values.astype(target)
    if values.dtype.kind in "iu" and values.size:
        info = np.iinfo(target)
        if values.min() >= info.min and values.max() <= info.max:
            return values.astype(target)
    return values


def rows_to_model_input(rows: Any, columns: list[str] | None, where: str) -> np.ndarray | pd.DataFrame:
    """Turn a list of instances into a numpy array or a DataFrame.

    Accepted: a list of equal-length lists (a 2-D table), a list of objects (one record each,
    keys are column names), or a list of scalars (one feature). Anything else is an InvalidInput.
    """
    from kserve.errors import InvalidInput

    if not isinstance(rows, list) or not rows:
        raise InvalidInput(f"{where} must be a non-empty list of instances")
    if all(isinstance(row, dict) for row in rows):
        return pd.DataFrame.from_records(rows)
    if any(isinstance(row, dict) for row in rows):
        raise InvalidInput(f"{where} mixes objects with other values; send all rows the same way")
    if all(isinstance(row, list) for row in rows):
        widths = {len(row) for row in rows}
        if len(widths) != 1:
            raise InvalidInput(f"{where} rows have different lengths {sorted(widths)}; every row needs the same")
        if any(isinstance(value, (list, dict)) for row in rows for value in row):
            raise InvalidInput(f"{where} rows must hold scalars, not nested lists or objects")
        if columns is not None:
            (width,) = widths
            if width != len(columns):
                raise InvalidInput(
                    f"{where} rows have {width} values but the model expects {len(columns)} columns: {columns}"
                )
            return pd.DataFrame(rows, columns=columns)
        return _as_array(rows, where)
    if any(isinstance(row, list) for row in rows):
        raise InvalidInput(f"{where} mixes lists with scalars; send a list of rows")
    return _as_array(rows, where)


def _as_array(values: list[Any], where: str) -> np.ndarray:
    from kserve.errors import InvalidInput

    array = np.asarray(values)
    if array.dtype == object:
        raise InvalidInput(f"{where} holds values of mixed or unsupported types")
    return array


def v2_inputs_to_model_input(request: Any, columns: list[str] | None) -> np.ndarray | pd.DataFrame:
    """V2 tensors -> pyfunc input: one tensor is the table itself, several are named columns."""
    from kserve.errors import InvalidInput

    inputs = list(request.inputs or [])
    if not inputs:
        raise InvalidInput('"inputs" must hold at least one tensor')
    from kserve.utils.numpy_codec import to_np_dtype

    arrays: dict[str, np.ndarray] = {}
    for tensor in inputs:
        if to_np_dtype(tensor.datatype) is None:
            raise InvalidInput(
                f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}; use one of "
                "BOOL, INT8..INT64, UINT8..UINT64, FP32, FP64, BYTES"
            )
        try:
            array = tensor.as_numpy()
        except InvalidInput:
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"input {tensor.name!r}: data does not match shape {tensor.shape} and datatype "
                f"{tensor.datatype}: {failure_line(str(exc), 200)}"
            ) from exc
        if tensor.datatype == "BYTES":
            array = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(array)
        arrays[tensor.name] = array
    if len(arrays) == 1:
        (array,) = arrays.values()
        if array.ndim == 2 and columns is not None:
            if array.shape[1] != len(columns):
                raise InvalidInput(
                    f"input has {array.shape[1]} columns but the model expects {len(columns)}: {columns}"
                )
            return pd.DataFrame(array, columns=columns)
        if array.ndim == 1 and columns is not None and len(columns) == 1:
            return pd.DataFrame({columns[0]: array})
        return array
    lengths = {name: a.shape[0] if a.ndim else 1 for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise InvalidInput(f"inputs have different numbers of rows: {lengths}")
    try:
        return pd.DataFrame({name: a.reshape(a.shape[0]) for name, a in arrays.items()})
    except ValueError as exc:
        raise InvalidInput(f"several inputs are read as columns; each must be 1-D or [N, 1]: {exc}") from exc


# --- pyfunc output -> JSON ----------------------------------------------------------------------


def to_json_value(result: Any) -> Any:
    """Predictions as plain JSON values (lists, numbers, strings), whatever pyfunc returned."""
    if isinstance(result, pd.DataFrame):
        if result.shape[1] == 1:
            return to_json_value(result.iloc[:, 0].to_numpy())
        return [to_json_value(row) for row in result.to_dict(orient="records")]
    if isinstance(result, pd.Series):
        return to_json_value(result.to_numpy())
    if isinstance(result, np.ndarray):
        return result.tolist()
    if isinstance(result, np.generic):
        return result.item()
    if isinstance(result, dict):
        return {str(k): to_json_value(v) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return [to_json_value(v) for v in result]
    return result


def to_v2_outputs(result: Any) -> list[Any]:
    """Predictions as V2 output tensors: one per column (DataFrame, dict) or one named ``predictions``."""
    from kserve import InferOutput
    from kserve.utils.numpy_codec import from_np_dtype

    if isinstance(result, pd.DataFrame):
        named = {str(c): result[c].to_numpy() for c in result.columns}
    elif isinstance(result, dict):
        named = {str(k): np.asarray(to_json_value(v)) for k, v in result.items()}
    else:
        named = {"predictions": np.asarray(to_json_value(result))}
    outputs = []
    for name, array in named.items():
        datatype = from_np_dtype(array.dtype) if array.dtype != object and array.dtype.kind != "U" else None
        if datatype is None:
            datatype = "BYTES"
            data = [str(v) for v in array.reshape(-1).tolist()]
        else:
            data = array.reshape(-1).tolist()
        outputs.append(InferOutput(name=name, shape=list(array.shape), datatype=datatype, data=data))
    return outputs


# --- the KServe model ---------------------------------------------------------------------------


def _build_model_class() -> type:
    """Define the kserve.Model subclass only once kserve is imported (it costs ~1 s)."""
    import kserve
    from kserve import InferRequest, InferResponse
    from kserve.errors import InferenceError, InvalidInput

    class MlflowPyfuncModel(kserve.Model):
        """A pyfunc model behind KServe's V1 and V2 handlers.

        ``pyfunc`` may be given already loaded: main() loads it before importing kserve, so a
        model that cannot be loaded fails without paying for that import.
        """

        def __init__(self, name: str, model_uri: str, version: str | None = None, pyfunc: Any = None) -> None:
            super().__init__(name)
            self.model_uri = model_uri
            self.version = version
            self._pyfunc: Any = pyfunc
            self._spec = InputSpec()

        def load(self) -> bool:
            if self._pyfunc is None:
                self._pyfunc = load_pyfunc(self.model_uri)
            self._spec = InputSpec.of(self._pyfunc)
            self.ready = True
            return self.ready

        def _run(self, data: Any) -> Any:
            # pyfunc rejects bad input with ValueError/TypeError/KeyError (sklearn) or an
            # MlflowException INVALID_PARAMETER_VALUE (schema enforcement): the client's fault.
            from mlflow.exceptions import MlflowException

            try:
                return self._pyfunc.predict(data)
            except MlflowException as exc:
                if exc.error_code == "INVALID_PARAMETER_VALUE":
                    raise InvalidInput(f"the model rejected the input: {failure_line(exc.message, 300)}") from exc
                raise InferenceError(f"prediction failed: {failure_line(exc.message, 300)}") from exc
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise InvalidInput(
                    f"the model rejected the input: {type(exc).__name__}: {failure_line(str(exc), 300)}"
                ) from exc
            except Exception as exc:  # noqa: BLE001 - the model itself failed: a 500 with its cause
                raise InferenceError(f"prediction failed: {type(exc).__name__}: {failure_line(str(exc), 300)}") from exc

        # Synchronous on purpose: KServe calls it on the event loop, so requests reach the
        # pyfunc one at a time — pyfunc models are not promised to be thread-safe.
        def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
            if isinstance(payload, InferRequest):
                data = v2_inputs_to_model_input(payload, self._spec.columns)
                result = self._run(self._spec.conform(data))
                return InferResponse(
                    response_id=payload.id or "",
                    model_name=self.name,
                    model_version=self.version,
                    infer_outputs=to_v2_outputs(result),
                )
            if not isinstance(payload, dict):
                raise InvalidInput(
                    'expected a JSON object {"instances": [...]} sent with content-type application/json'
                )
            if "instances" not in payload:
                raise InvalidInput(f'missing "instances"; got keys {sorted(payload)}')
            data = rows_to_model_input(payload["instances"], self._spec.columns, '"instances"')
            return {"predictions": to_json_value(self._run(self._spec.conform(data)))}

    return MlflowPyfuncModel


def _install_400_for_schema_errors() -> None:
    """FastAPI answers a V2 body that fails KServe's pydantic model with 422 and pydantic's
    structure; the protocol (and our callers) expect 400 with a message naming the field."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve import model_server

    async def handler(_request: Any, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            # The endpoint's body is Union[InferenceRequest, bytes]: the bytes branch's
            # complaint is noise, and the model name is implied by the V2 schema.
            if loc[:1] == ["bytes"]:
                continue
            if err.get("type") == "json_invalid":
                problems.append(f"body is not valid JSON ({err.get('msg', '')})")
                continue
            if loc[:1] == ["InferenceRequest"]:
                loc = loc[1:]
            problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
        problems = problems[:5] or ["body does not match the V2 inference request schema"]
        return JSONResponse(status_code=400, content={"error": "invalid request: " + "; ".join(problems)})

    model_server.app.add_exception_handler(RequestValidationError, handler)


def _install_body_limit(max_bytes: int) -> None:
    """Bound every request body on KServe's app (413 with a message naming the limit).

    KServe builds its FastAPI app at import (``kserve.model_server.app``) and adds its own
    middleware only when the server starts, so a middleware added here, before ``start()``, wraps
    every route it registers (V1, V2, health, metrics). The limit is canary's, as on the router
    and the comparator: it also counts a chunked body that declares no Content-Length.
    """
    from kserve import model_server

    from canary.traffic.body_limit import BodySizeLimit

    model_server.app.add_middleware(BodySizeLimit, max_bytes=max_bytes)


def _model_server_class() -> type:
    import kserve

    class LoopbackModelServer(kserve.ModelServer):
        """KServe's server with a configurable bind address.

        KServe's RESTServer hard-codes host 0.0.0.0; the local platform keeps every port on
        loopback. The REST server object exists once start() has built it and is only bound when
        the event loop runs, and setup_event_loop() is called in between.
        """

        def __init__(self, host: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._bind_host = host

        def setup_event_loop(self) -> None:
            if self._rest_server is not None:
                self._rest_server.config.host = self._bind_host
            super().setup_event_loop()

    return LoopbackModelServer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m controller.local.modelserver",
        description="Serve one MLflow model version with KServe's model server (V1 and V2 protocols).",
    )
    parser.add_argument("--name", required=True, help="model name in the URL paths (/v1/models/NAME)")
    parser.add_argument("--model-uri", required=True, help="local path, models:/name/version or mlflow-artifacts:/...")
    parser.add_argument("--port", required=True, type=int, help="HTTP port")
    parser.add_argument("--version", default=None, help="model version, reported in V2 responses")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"largest request body accepted; larger ones are answered 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    args = parser.parse_args(argv)
    if args.max_body_bytes < 1:
        parser.error("--max-body-bytes must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # kserve parses sys.argv itself when imported (parse_known_args); give it nothing of ours.
    sys.argv = sys.argv[:1]
    try:
        pyfunc = load_pyfunc(args.model_uri)
    except ModelLoadError as exc:
        print(f"modelserver {args.name}: {exc}", file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    model = _build_model_class()(args.name, args.model_uri, args.version, pyfunc)
    model.load()
    _install_400_for_schema_errors()
    _install_body_limit(args.max_body_bytes)
    server = _model_server_class()(host=args.host, http_port=args.port, workers=1, enable_grpc=False)
    # KServe logs two timing lines per request at INFO; the access log already says enough. Set
    # after the server is made: its constructor configures KServe's loggers, levels included.
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    # KServe answers with FastAPI's ORJSONResponse, which newer FastAPI warns about on every request:
    # a log of nothing but that warning, whose last line would become a dead server's reason.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
