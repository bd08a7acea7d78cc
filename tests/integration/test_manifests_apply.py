"""`kubectl apply -f manifests/…` through the real kubectl binary against the Kubernetes API emulator.

The emulator (tests/kube/) checks CRDs as apiextensions.k8s.io/v1 does and validates every custom
object against its CRD's schema, so these show that the install's CRDs are accepted and served,
that the base applies as the README says (`kubectl apply -k manifests/`) on a cluster without the
Prometheus Operator's CRDs, as the emulator is, and re-applies as unchanged, and that the examples
pass the API server's checks for our CRD and KServe's. Not applied: manifests/monitoring/, whose
kinds need those CRDs (tests/unit/test_manifests.py checks it; tests/integration/test_alert_rules.py
runs the rules through promtool); and nothing checks the built-in kinds' own validation, which the
emulator does not reproduce.

A private emulator: the install adds cluster-scoped objects (a ClusterKopfPeering named
`modelrollout`, the peering CRDs) that the shared one must not see.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.kube import start_kube_api
from tests.kube.server import EmulatorServer

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NAMESPACE = "modelrollout-system"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = start_kube_api(tmp_path_factory.mktemp("manifests-api"))
    try:
        server.load_kserve_crd()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def installed(cluster: EmulatorServer) -> EmulatorServer:
    """The CRDs first (as the kustomization's comment says), then the rest of the base."""
    result = cluster.kubectl("apply", "-f", str(MANIFESTS / "crd"))
    assert sorted(result.stdout.split("\n"))[-3:] == [
        "customresourcedefinition.apiextensions.k8s.io/clusterkopfpeerings.kopf.dev created",
        "customresourcedefinition.apiextensions.k8s.io/kopfpeerings.kopf.dev created",
        "customresourcedefinition.apiextensions.k8s.io/modelrollouts.modelrollout.io created",
    ]
    cluster.kubectl("wait", "--for", "condition=established", "--timeout=10s", "-f", str(MANIFESTS / "crd"))
    cluster.kubectl("apply", "-k", str(MANIFESTS))
    return cluster


def applicable(cluster: EmulatorServer) -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/`: what `kubectl apply -k manifests/` applies."""
    rendered = cluster.kubectl("kustomize", str(MANIFESTS)).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def namespace(cluster: EmulatorServer, name: str) -> str:
    with httpx.Client(base_url=cluster.url, timeout=10.0) as http:
        created = http.post("/api/v1/namespaces", json={"metadata": {"name": name}})
        assert created.status_code == 201, created.text
    return name


def get(cluster: EmulatorServer, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_the_crds_are_served_with_their_short_names_and_scopes(installed: EmulatorServer) -> None:
    lines = installed.kubectl("api-resources", "--no-headers").stdout.splitlines()
    rows = {line.split()[-1]: line.split() for line in lines}
    assert rows["ModelRollout"] == ["modelrollouts", "mro", "modelrollout.io/v1alpha1", "true", "ModelRollout"]
    assert rows["KopfPeering"] == ["kopfpeerings", "kopf.dev/v1", "true", "KopfPeering"]
    assert rows["ClusterKopfPeering"] == ["clusterkopfpeerings", "kopf.dev/v1", "false", "ClusterKopfPeering"]


def test_the_base_applies_and_reapplies_unchanged(installed: EmulatorServer) -> None:
    rest = applicable(installed)
    again = installed.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rest)).stdout.splitlines()
    assert len(again) == len(rest) and all(line.endswith(" unchanged") for line in again), again

    role = get(installed, "clusterrole", "modelrollout")
    assert role["rules"] == next(d for d in rest if d["kind"] == "ClusterRole")["rules"]
    peering = get(installed, "clusterkopfpeering", "modelrollout")
    assert "namespace" not in peering["metadata"]
    names = get(installed, "deployments,services,serviceaccounts,configmaps", "-n", NAMESPACE)
    assert sorted((i["kind"], i["metadata"]["name"]) for i in names["items"]) == [
        ("ConfigMap", "modelrollout-config"),
        ("Deployment", "modelrollout"),
        ("Deployment", "modelrollout-comparator"),
        ("Service", "modelrollout-comparator"),
        ("Service", "modelrollout-webhooks"),
        ("ServiceAccount", "modelrollout"),
    ]


def test_the_examples_apply_and_show_in_kubectl_get(installed: EmulatorServer) -> None:
    models = namespace(installed, "models")
    applied = installed.kubectl("apply", "-n", models, "-f", str(MANIFESTS / "examples")).stdout.splitlines()
    assert sorted(applied) == [
        "inferenceservice.serving.kserve.io/iris created",
        "modelrollout.modelrollout.io/iris created",
    ]
    table = installed.kubectl("get", "mro", "-n", models).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "STABLE", "CANDIDATE", "PHASE", "WEIGHT", "AGE"]
    assert table[1].split()[:2] == ["iris", "iris"]
    # The API server filled the schema's defaults in and kept what the example says.
    rollout = get(installed, "mro", "iris", "-n", models)
    assert rollout["spec"]["canary"]["steps"] == [10, 25, 50]
    assert rollout["spec"]["model"]["candidateAlias"] == "challenger"
    isvc = get(installed, "inferenceservice", "iris", "-n", models)
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://")


@pytest.mark.parametrize(("example", "path", "value", "complaint"), [
    ("modelrollout.yaml", ("spec", "target", "deploymentMode"), "Serverless", "spec.target.deploymentMode"),
    ("modelrollout.yaml", ("spec", "canary", "steps"), [0, 10], "spec.canary.steps[0]"),
    ("modelrollout.yaml", ("spec", "shadow", "duration"), "ten minutes", "spec.shadow.duration"),
    ("inferenceservice.yaml", ("spec", "predictor", "model", "storageUri"), 7, "spec.predictor.model.storageUri"),
])  # fmt: skip
def test_a_broken_example_is_refused_by_the_api_naming_the_field(
    installed: EmulatorServer, tmp_path: Path, example: str, path: tuple[str, ...], value: Any, complaint: str
) -> None:
    document = copy.deepcopy(yaml.safe_load((MANIFESTS / "examples" / example).read_text()))
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (tmp_path / example).write_text(yaml.safe_dump(document))
    refused = installed.kubectl("apply", "-n", "default", "-f", str(tmp_path / example), check=False)
    assert refused.returncode != 0
    assert complaint in refused.stderr, refused.stderr
    kind = "mro" if example == "modelrollout.yaml" else "inferenceservice"
    assert installed.kubectl("get", kind, "iris", "-n", "default", check=False).returncode != 0, "nothing was stored"
