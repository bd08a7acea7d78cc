"""Credentials in a service URL (`https://user:token@host`) never reach a message: errors end up
in the rollout status, Events, MLflow tags and reports. Real clients against closed ports."""

from __future__ import annotations

import pytest

from canary.decision.metrics import MetricsUnavailable, PrometheusProvider, without_credentials
from registry.connection import connect
from registry.errors import RegistryUnavailable, translated
from tests.fixtures.prometheus import free_port

SECRET = "s3cr3t-t0ken"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
        (f"https://admin:{SECRET}@prom.example:443/prefix", "https://***@prom.example:443/prefix"),
        (f"https://{SECRET}@prom.example", "https://***@prom.example"),
        ("http://user:p%40ss@[::1]:9090", "http://***@[::1]:9090"),  # an encoded @ in the password
    ],
)
def test_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert without_credentials(url) == shown


def test_an_unreachable_prometheus_is_named_without_its_password() -> None:
    provider = PrometheusProvider(f"http://admin:{SECRET}@127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(MetricsUnavailable) as caught:
        provider.query_value("vector(1)")
    assert SECRET not in str(caught.value)
    assert "***@127.0.0.1" in str(caught.value)


def test_an_unreachable_mlflow_is_named_without_its_token() -> None:
    client = connect(f"http://robot:{SECRET}@127.0.0.1:{free_port()}", timeout_s=2, max_retries=0)
    with pytest.raises(RegistryUnavailable) as caught, translated(client, "iris"):
        client.get_registered_model("iris")
    assert SECRET not in str(caught.value)
    assert "MLflow at http://***@127.0.0.1" in str(caught.value)
