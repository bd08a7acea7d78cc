"""The admin APIs that decide where requests go. The shadow comparator's (PUT/GET/DELETE
/admin/shadows: where copies of live requests go) answers only the bearer token it was given; the
logger's events, labels, metrics and probes stay open; without a token, `shadow-server` listens on
loopback only. The local router's (/admin/routing) answers this machine only, whatever --host."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from canary.traffic.comparator import ADMIN_TOKEN_ENV, ComparatorSettings, create_app
from canary.traffic.router import RouterSettings
from canary.traffic.router import create_app as create_router
from controller.cli.main import app as cli

TOKEN = "s3cret-token-for-tests"
TARGET = {
    "rollout": "iris", "namespace": "models", "inferenceService": "iris", "model": "iris",
    "stableVersion": "1", "candidateVersion": "2", "shadowUrl": "http://127.0.0.1:9",
}  # fmt: skip


def client(token: str | None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(ComparatorSettings(admin_token=token)))
    return httpx.AsyncClient(transport=transport, base_url="http://comparator")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", ""])
async def test_admin_calls_without_the_token_are_refused(authorization: str | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    async with client(TOKEN) as http:
        for method, path in (("PUT", "/admin/shadows"), ("GET", "/admin/shadows"), ("DELETE", "/admin/shadows/models/iris")):
            answer = await http.request(method, path, json=TARGET if method == "PUT" else None, headers=headers)
            assert answer.status_code == 401, (method, authorization, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in answer.json()["error"] and TOKEN not in answer.text
        # Nothing was installed by the refused PUT.
        assert (await http.get("/admin/shadows", headers={"authorization": f"Bearer {TOKEN}"})).json() == []


async def test_the_token_opens_the_admin_api_and_the_rest_needs_none() -> None:
    admin = {"authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive (RFC 7235)
    async with client(TOKEN) as http:
        assert (await http.put("/admin/shadows", json=TARGET, headers=admin)).status_code == 200
        [listed] = (await http.get("/admin/shadows", headers=admin)).json()
        assert listed["candidateVersion"] == "2"
        for path in ("/healthz", "/metrics"):
            assert (await http.get(path)).status_code == 200, path
        # The logger's events are not admin calls (here: for an InferenceService nobody shadows).
        event = await http.post("/", json={"instances": [[1]]}, headers={"ce-id": "e1", "ce-type": "org.kubeflow.serving.inference.request", "ce-inferenceservicename": "other"})
        assert event.status_code != 401
        assert (await http.delete("/admin/shadows/models/iris", headers=admin)).status_code == 204


async def test_without_a_token_the_admin_api_is_open() -> None:
    async with client(None) as http:
        assert (await http.get("/admin/shadows")).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "modelrollout-comparator"])
def test_shadow_server_refuses_an_open_admin_api_off_loopback(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    result = CliRunner().invoke(cli, ["shadow-server", "--host", host, "--port", "1"])
    assert result.exit_code == 2
    assert f"set {ADMIN_TOKEN_ENV}" in " ".join(result.output.split()) and f"--host {host}" in result.output


@pytest.mark.parametrize(("client", "allowed"), [
    (("127.0.0.1", 40000), True), (("::1", 40000), True), (("10.0.0.9", 40000), False), (("192.168.1.20", 1), False),
])  # fmt: skip
async def test_the_routers_admin_api_answers_this_machine_only(client: tuple[str, int], allowed: bool) -> None:
    routing = {"model": "iris", "stable": {"version": "1", "url": "http://127.0.0.1:9"}}
    transport = httpx.ASGITransport(app=create_router(RouterSettings(rollout="r")), client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
        put = await http.put("/admin/routing", json=routing)
        got = await http.get("/admin/routing")
        assert (put.status_code, got.status_code) == ((200, 200) if allowed else (403, 403)), (put.text, got.text)
        if not allowed:
            assert "loopback" in put.json()["error"]
            assert (await http.get("/healthz")).json()["routing"] is False  # the refused PUT changed nothing
        assert (await http.get("/metrics")).status_code == 200
