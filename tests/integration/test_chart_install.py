"""`helm install` of charts/modelrollout by real Helm (v4's Go SDK, helm-python-sdk) into the
Kubernetes API emulator: a cluster without the Prometheus Operator's CRDs, as many are.

The default install must deploy there, CRDs from crds/ first; asking for the ServiceMonitor on such
a cluster fails before any object of the release is made (which is why monitoring is off by default). Release
records are kept in memory (Helm's `memory` storage driver): the emulator serves Secrets, but
nothing here is about where Helm keeps its history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest

from tests.fixtures.kube import start_kube_api
from tests.helm import Helm
from tests.kube.server import EmulatorServer

CHART = Path(__file__).resolve().parents[2] / "charts" / "modelrollout"
NAMESPACE = "modelrollout-system"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmulatorServer]:
    """A fresh cluster per test: Helm v4 server-side applies crds/ on every install, and the
    emulator applies only where it creates."""
    server = start_kube_api(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def install(cluster: EmulatorServer, release: str, namespace: str, values: dict[str, Any]) -> dict[str, Any]:
    with helm_python.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace, storage_driver="memory") as config:
        return config.install(str(CHART), release, values, namespace=namespace, create_namespace=True, timeout=60)


def listed(cluster: EmulatorServer, what: str, namespace: str | None = None) -> set[tuple[str, str]]:
    where = ["-n", namespace] if namespace else []
    items = json.loads(cluster.kubectl("get", what, *where, "-o", "json").stdout)["items"]
    return {(item["kind"], item["metadata"]["name"]) for item in items}


def test_a_default_install_deploys_on_a_cluster_without_the_prometheus_operator(cluster: EmulatorServer) -> None:
    release = install(cluster, "modelrollout", NAMESPACE, {})
    assert release["status"] == "deployed" and release["revision"] == 1
    assert "driving ModelRollouts in every namespace" in release["notes"]
    assert {"modelrollouts.modelrollout.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= {
        name for _, name in listed(cluster, "customresourcedefinitions")
    }
    rendered = Helm(CHART, "modelrollout", NAMESPACE).objects()
    namespaced = {(d["kind"], d["metadata"]["name"]) for d in rendered if d["metadata"].get("namespace") == NAMESPACE}
    assert namespaced == listed(cluster, "deployments,services,configmaps,serviceaccounts,secrets", NAMESPACE)
    assert ("ClusterRole", "modelrollout") in listed(cluster, "clusterroles")
    assert ("ClusterKopfPeering", "modelrollout") in listed(cluster, "clusterkopfpeerings")
    # What kubectl reads back is what Helm rendered, e.g. the operator's arguments.
    deployment = json.loads(cluster.kubectl("get", "deployment", "modelrollout", "-n", NAMESPACE, "-o", "json").stdout)
    [operator] = [d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "modelrollout"]
    running = deployment["spec"]["template"]["spec"]["containers"][0]
    assert running["args"] == operator["spec"]["template"]["spec"]["containers"][0]["args"]


def test_monitoring_asked_for_where_its_crds_are_missing_fails_before_creating_anything(cluster: EmulatorServer) -> None:
    """Why monitoring is off by default: its kinds exist only with the Prometheus Operator."""
    with pytest.raises(helm_python.HelmError) as caught:
        install(cluster, "monitored", "monitored", {"serviceMonitor": {"enabled": True}})
    assert "unable to build kubernetes objects from release manifest" in str(caught.value), caught.value
    assert listed(cluster, "deployments,services,configmaps", "monitored") == set()
