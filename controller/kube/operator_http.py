"""The operator's HTTP port: MLflow webhooks, its Prometheus metrics, liveness and readiness.

Served by uvicorn in a thread of its own, so the kopf event loop (and its signal handling) stays
kopf's: a webhook handler only sets flags, it never blocks that thread either.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from registry.webhooks import WEBHOOK_PATH, WebhookEvent, webhook_router

log = logging.getLogger("modelrollout.http")

Probe = Callable[[], str | None]  # None: healthy; else why not


def create_app(
    metrics: CollectorRegistry,
    liveness: Probe,
    readiness: Probe,
    webhook_secret: str | None,
    on_webhook: Callable[[WebhookEvent], None],
) -> FastAPI:
    app = FastAPI(title="modelrollout operator", docs_url=None, redoc_url=None, openapi_url=None)
    if webhook_secret:
        app.include_router(webhook_router(webhook_secret, on_webhook))
    else:
        log.info("MODELROLLOUT_WEBHOOK_SECRET is not set: %s answers 404, the registry poll alone finds promotions", WEBHOOK_PATH)

    def probe(check: Probe) -> JSONResponse:
        problem = check()
        if problem is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "failing", "reason": problem}, status_code=503)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return probe(liveness)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        return probe(readiness)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app


class HttpServer:
    """uvicorn on a socket bound up front (so a taken port fails at start, naming it)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as err:
            self._socket.close()
            raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        self.host, self.port = host, int(self._socket.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True, name="http")

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
