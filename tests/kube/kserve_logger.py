"""KServe's logger agent (the `agent` container KServe injects beside a logged predictor), as a double.

What it does, read in kserve/kserve at `v0.20.0`:

- `pkg/logger/handler.go` L116-121: kubelet probes are proxied without logging.
- L131-140: `ce-metadata` holds the request headers named in `metadataHeaders`, matched exactly
  against Go's canonical header names (`X-Request-Id`, never `x-request-id`).
- L143, L210-216: the event id is the request's `Ce-Id` header, else a random UUID that nobody is
  told; the same id for the request and the response event.
- L146-166: the request event is queued *before* the request is proxied, timed at its arrival.
- L183-207: the response event is queued only when the model server answered exactly 200.
- L144, L150, L188: both events carry the request's `Content-Type`.
- `pkg/logger/worker.go` L87-169: binary-mode CloudEvents POSTed to the logger URL: `ce-specversion`
  1.0, `ce-id`, `ce-type` (`org.kubeflow.serving.inference.request` / `.response`), `ce-source`
  (`http://localhost:9081/` when the pod had no name at admission, cmd/agent/main.go L292-294),
  `ce-time`, and the extensions `ce-recordedtime`, `ce-inferenceservicename`, `ce-namespace`,
  `ce-component`, `ce-endpoint` (empty: no controller sets the label) and `ce-metadata` (always, `{}`
  when empty); no retry, an error is only logged.
- `pkg/logger/dispatcher.go` L27-82 and cmd/agent/main.go L64: five workers send concurrently, so
  a response event may arrive before its request's.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import httpx

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
WORKERS = 5

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _canonical(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: `x-request-id` -> `X-Request-Id`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class LoggerAgent:
    """Proxies requests to a model server, logging them to the logger's URL as KServe's agent does."""

    def __init__(self, namespace: str, component: str = "predictor") -> None:
        self.namespace, self.component = namespace, component
        self._events = ThreadPoolExecutor(WORKERS, thread_name_prefix="kserve-agent")
        self._http = httpx.Client(timeout=10.0)
        self.failed_deliveries = 0

    def close(self) -> None:
        self._events.shutdown(wait=True)
        self._http.close()

    def proxy(
        self, logger: Mapping[str, Any], inference_service: str, upstream: str, path: str, body: bytes,
        headers: Mapping[str, str],
    ) -> httpx.Response:  # fmt: skip
        """One client request through the agent of a pod of `inference_service`, logged per `logger`
        (its predictor's LoggerSpec)."""
        arrived = _now()
        canonical = {_canonical(k): v for k, v in headers.items()}
        event_id = canonical.get("Ce-Id") or str(uuid.uuid4())
        wanted = list(logger.get("metadataHeaders") or [])
        metadata = {name: [value] for name, value in canonical.items() if name in wanted}
        content_type = canonical.get("Content-Type", "")
        mode = logger.get("mode")
        url = logger["url"]
        if mode in ("all", "request"):
            self._send(url, inference_service, event_id, REQUEST_EVENT, arrived, metadata, content_type, body)
        response = self._http.post(upstream + path, content=body, headers=dict(headers))
        if response.status_code == 200 and mode in ("all", "response"):
            self._send(url, inference_service, event_id, RESPONSE_EVENT, _now(), metadata, content_type, response.content)
        return response

    def _send(self, url: str, inference_service: str, event_id: str, kind: str, at: str, metadata: dict,
              content_type: str, data: bytes) -> None:  # fmt: skip
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-type": kind,
            "ce-source": "http://localhost:9081/",
            "ce-time": at,
            "ce-recordedtime": _now(),
            "ce-inferenceservicename": inference_service,
            "ce-namespace": self.namespace,
            "ce-component": self.component,
            "ce-endpoint": "",
            "ce-metadata": json.dumps(metadata, separators=(",", ":")),
            "content-type": content_type,
        }
        self._events.submit(self._post, url, headers, data)

    def _post(self, url: str, headers: dict[str, str], data: bytes) -> None:
        try:
            self._http.post(url, content=data, headers=headers)
        except httpx.HTTPError as err:  # the agent logs and forgets (worker.go L183-185)
            self.failed_deliveries += 1
            log.debug("logger delivery failed: %s", err)
