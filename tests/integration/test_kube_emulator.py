"""The Kubernetes API emulator behaves like kube-apiserver for the clients we use.

Each client is the real one: the official `kubernetes` client, the `kubectl` binary, kopf. Most
tests share one private emulator (module scope) so that registering test CRDs does not leak into
the session-wide `kube_api`; the fixtures themselves are exercised at the end.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import yaml
from kmock import KubernetesError
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.fixtures.kube import start_kube_api
from tests.kube.patches import (
    MalformedPatch,
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from tests.kube.selectors import parse_label_selector
from tests.kube.server import EmulatorServer
from tests.kube.tables import json_path

GROUP, VERSION, PLURAL = "emulator.test", "v1alpha1", "modelrollouts"

# A small CRD shaped like ours (status subresource, printer columns, short name `mro`) whose schema
# uses what validation must enforce: required, pattern, enum, bounds, defaults, maps.
MRO_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "modelrollout", "kind": "ModelRollout", "shortNames": ["mro"]},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {"name": "Weight", "type": "integer", "jsonPath": ".status.weight"},
                {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["model"],
                        "properties": {
                            "model": {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9_.-]+$"},
                            "mode": {"type": "string", "enum": ["Knative", "Standard"], "default": "Knative"},
                            "steps": {"type": "array", "maxItems": 5, "items": {"type": "integer", "minimum": 1, "maximum": 100}},
                            "interval": {"type": "string", "default": "60s"},
                            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                    "status": {
                        "type": "object",
                        "properties": {
                            "phase": {"type": "string"},
                            "weight": {"type": "integer"},
                            "observedSteps": {"type": "integer"},
                            "conditions": {"type": "array", "items": {"type": "object", "properties": {
                                "type": {"type": "string"}, "status": {"type": "string"}}}},
                        },
                    },
                },
            }},
        }],
    },
}  # fmt: skip


def rollout(name: str, model: str = "iris", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {"model": model, **spec},
    }


def api_error(call: Any, *args: Any, **kwargs: Any) -> ApiException:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return caught.value


def message(exc: ApiException) -> str:
    return json.loads(exc.body)["message"]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = start_kube_api(tmp_path_factory.mktemp("kube-emulator-tests"))
    try:
        server.load_crds([MRO_CRD])
        yield server
        assert server.emulator.internal_errors == [], "the emulator failed internally:\n" + "\n".join(
            server.emulator.internal_errors
        )
    finally:
        server.stop()


@pytest.fixture
def namespace(api: EmulatorServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t{abs(hash(request.node.name)) % 10**8}"
    with httpx.Client(base_url=api.url) as http:
        assert http.post("/api/v1/namespaces", json={"metadata": {"name": name}}).status_code == 201
        yield name
        http.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def core(api: EmulatorServer) -> Iterator[k8s.CoreV1Api]:
    with api.api_client() as api_client:
        yield k8s.CoreV1Api(api_client)


@pytest.fixture
def custom(api: EmulatorServer) -> Iterator[k8s.CustomObjectsApi]:
    with api.api_client() as api_client:
        yield k8s.CustomObjectsApi(api_client)


# --- the official client on built-in kinds -------------------------------------------------------


def test_create_answers_201_and_stamps_metadata(core: k8s.CoreV1Api, namespace: str) -> None:
    body = {"metadata": {"name": "settings", "labels": {"app": "a"}}, "data": {"k": "v"}}
    created, status, _ = core.create_namespaced_config_map_with_http_info(namespace, body)

    assert status == 201
    meta = created.metadata
    assert meta.namespace == namespace  # from the URL: the body had none
    assert meta.uid and meta.creation_timestamp is not None and int(meta.resource_version) > 0
    again = core.read_namespaced_config_map("settings", namespace)
    assert again.metadata.resource_version == meta.resource_version and again.data == {"k": "v"}


def test_create_refuses_duplicates_missing_namespaces_and_mismatches(core: k8s.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "once"}})

    duplicate = api_error(core.create_namespaced_config_map, namespace, {"metadata": {"name": "once"}})
    assert (duplicate.status, duplicate.reason) == (409, "Conflict")
    assert json.loads(duplicate.body)["reason"] == "AlreadyExists"
    assert message(duplicate) == 'configmaps "once" already exists'

    missing = api_error(core.create_namespaced_config_map, "no-such-namespace", {"metadata": {"name": "x"}})
    assert missing.status == 404 and message(missing) == 'namespaces "no-such-namespace" not found'

    elsewhere = api_error(
        core.create_namespaced_config_map, namespace, {"metadata": {"name": "x", "namespace": "default"}}
    )
    assert elsewhere.status == 400 and "does not match the namespace" in message(elsewhere)

    bad_name = api_error(core.create_namespaced_config_map, namespace, {"metadata": {"name": "Not_A_Name"}})
    assert bad_name.status == 422 and 'metadata.name: Invalid value: "Not_A_Name"' in message(bad_name)

    bad_label = api_error(
        core.create_namespaced_config_map, namespace, {"metadata": {"name": "y", "labels": {"model": "iris/v1"}}}
    )
    assert bad_label.status == 422 and 'metadata.labels: Invalid value: "iris/v1"' in message(bad_label)


def test_list_filters_by_label_and_field_selectors(core: k8s.CoreV1Api, namespace: str) -> None:
    for name, labels in [
        ("a", {"tier": "web", "env": "prod"}),
        ("b", {"tier": "web"}),
        ("c", {"tier": "db", "env": "dev"}),
    ]:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}})

    def names(**selectors: str) -> list[str]:
        return [cm.metadata.name for cm in core.list_namespaced_config_map(namespace, **selectors).items]

    assert names() == ["a", "b", "c"]
    assert names(label_selector="tier=web") == ["a", "b"]
    assert names(label_selector="tier=web,env") == ["a"]
    assert names(label_selector="!env") == ["b"]
    assert names(label_selector="env in (prod, dev),tier!=db") == ["a"]
    assert names(label_selector="env notin (prod)") == ["b", "c"]
    assert names(field_selector="metadata.name=c") == ["c"]
    listing = core.list_namespaced_config_map(namespace)
    assert int(listing.metadata.resource_version) >= max(int(cm.metadata.resource_version) for cm in listing.items)

    broken = api_error(core.list_namespaced_config_map, namespace, label_selector="tier in web")
    assert broken.status == 400 and "unable to parse requirement" in message(broken)
    unsupported = api_error(core.list_namespaced_config_map, namespace, field_selector="spec.foo=1")
    assert unsupported.status == 400 and "field label not supported: spec.foo" in message(unsupported)


def test_namespaces_are_listed_and_events_are_creatable_in_both_apis(
    api: EmulatorServer, core: k8s.CoreV1Api, namespace: str
) -> None:
    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert {"default", "kube-system", namespace} <= set(names)
    assert core.read_namespace(namespace).status.phase == "Active"

    involved = {"kind": "ModelRollout", "name": "iris", "namespace": namespace, "apiVersion": f"{GROUP}/{VERSION}"}
    core.create_namespaced_event(namespace, {
        "metadata": {"generateName": "iris-"}, "involvedObject": involved,
        "reason": "Promoted", "message": "version 2 is the champion", "type": "Normal",
    })  # fmt: skip
    with api.api_client() as api_client:
        events_v1 = k8s.EventsV1Api(api_client)
        events_v1.create_namespaced_event(namespace, {
            "metadata": {"name": "iris-rollback"}, "regarding": involved, "reason": "RolledBack",
            "note": "p99 latency breached", "type": "Warning", "action": "Rollback",
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "modelrollout.io/operator",
            "reportingInstance": "operator-0",
        })  # fmt: skip
        assert [e.reason for e in events_v1.list_namespaced_event(namespace).items] == ["RolledBack"]

    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=iris").items
    assert [(e.reason, e.metadata.name.startswith("iris-")) for e in events] == [("Promoted", True)]


def test_finalizers_hold_deletion_until_removed(core: k8s.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "held", "finalizers": ["modelrollout.io/cleanup"]}}
    )

    core.delete_namespaced_config_map("held", namespace)
    held = core.read_namespaced_config_map("held", namespace)
    assert held.metadata.deletion_timestamp is not None

    adding = api_error(
        core.patch_namespaced_config_map,
        "held",
        namespace,
        {"metadata": {"finalizers": ["a", "modelrollout.io/cleanup"]}},
    )
    assert adding.status == 422 and "no new finalizers can be added" in message(adding)

    core.patch_namespaced_config_map("held", namespace, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert api_error(core.read_namespaced_config_map, "held", namespace).status == 404


def test_deleting_an_owner_or_a_namespace_deletes_what_it_owns(api: EmulatorServer, core: k8s.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    owner = core.create_namespaced_config_map("doomed", {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "owned", "ownerReferences": [reference]}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "free"}})

    core.delete_namespaced_config_map("owner", "doomed")
    assert [cm.metadata.name for cm in core.list_namespaced_config_map("doomed").items] == ["free"]

    core.delete_namespace("doomed")
    assert api_error(core.read_namespace, "doomed").status == 404
    assert core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=doomed").items == []


# --- custom resources ----------------------------------------------------------------------------


def test_custom_resource_create_defaults_and_generation(custom: k8s.CustomObjectsApi, namespace: str) -> None:
    body = rollout("iris", status={"phase": "Promoted"})
    created, status, _ = custom.create_namespaced_custom_object_with_http_info(GROUP, VERSION, namespace, PLURAL, body)

    assert status == 201
    assert created["metadata"]["generation"] == 1
    assert created["spec"] == {"model": "iris", "mode": "Knative", "interval": "60s"}  # schema defaults
    assert "status" not in created  # the status subresource owns status: a create cannot set it

    spec_change = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"steps": [10, 50]}}
    )
    assert spec_change["metadata"]["generation"] == 2
    assert int(spec_change["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    labelled = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {"metadata": {"labels": {"team": "ml"}}}
    )
    assert labelled["metadata"]["generation"] == 2  # metadata is not spec

    removed = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"steps": None}}
    )
    assert "steps" not in removed["spec"] and removed["metadata"]["generation"] == 3  # RFC 7386: null removes

    noop = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"model": "iris"}})
    assert (
        noop["metadata"]["resourceVersion"] == removed["metadata"]["resourceVersion"]
    )  # nothing changed, nothing bumped


def test_status_subresource_is_split_from_the_main_resource(custom: k8s.CustomObjectsApi, namespace: str) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("iris"))

    main = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"steps": [5]}, "status": {"phase": "Ignored"}}
    )
    assert main["spec"]["steps"] == [5] and "status" not in main

    status = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "iris",
        {"spec": {"steps": [99]}, "status": {"phase": "Progressing", "weight": 10}},
    )
    assert status["status"] == {"phase": "Progressing", "weight": 10}
    assert status["spec"]["steps"] == [5]  # a /status write cannot touch spec
    assert status["metadata"]["generation"] == main["metadata"]["generation"]  # nor bump generation

    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {**status, "status": {"phase": "Lost"}}
    )
    assert replaced["status"] == {"phase": "Progressing", "weight": 10}


def test_json_patch_test_failure_is_422_and_success_applies(custom: k8s.CustomObjectsApi, namespace: str) -> None:
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("iris"))
    version = created["metadata"]["resourceVersion"]

    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "replace", "path": "/spec/model", "value": "wine"},
    ]
    failed = api_error(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "iris",
        stale,
        _content_type="application/json-patch+json",
    )
    assert failed.status == 422 and "test failed" in message(failed)
    assert custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")["spec"]["model"] == "iris"

    fresh = [{"op": "test", "path": "/metadata/resourceVersion", "value": version},
             {"op": "replace", "path": "/spec/model", "value": "wine"},
             {"op": "add", "path": "/metadata/finalizers", "value": ["modelrollout.io/x"]},
             {"op": "add", "path": "/metadata/finalizers/-", "value": "modelrollout.io/y"}]  # fmt: skip
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", fresh, _content_type="application/json-patch+json"
    )
    assert patched["spec"]["model"] == "wine" and patched["metadata"]["finalizers"] == [
        "modelrollout.io/x",
        "modelrollout.io/y",
    ]

    missing = [{"op": "remove", "path": "/spec/nothing"}]
    gone = api_error(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "iris",
        missing,
        _content_type="application/json-patch+json",
    )
    assert gone.status == 422 and "/spec/nothing" in message(gone)


def test_replace_with_a_stale_resource_version_conflicts(custom: k8s.CustomObjectsApi, namespace: str) -> None:
    first = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("iris"))
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"model": "wine"}})

    stale = {**first, "spec": {**first["spec"], "model": "digits"}}
    conflict = api_error(custom.replace_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, "iris", stale)
    assert conflict.status == 409
    assert (
        message(conflict)
        == f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "iris": the object has been modified; please apply your changes to the latest version and try again'
    )

    current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {**current, "spec": {**current["spec"], "model": "digits"}}
    )
    assert replaced["spec"]["model"] == "digits"

    merge_with_stale = api_error(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "iris",
        {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "spec": {"model": "x"}},
    )
    assert merge_with_stale.status == 409


def test_patch_types_a_real_server_refuses_for_custom_resources(
    api: EmulatorServer, custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("iris"))
    url = f"{api.url}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/iris"

    strategic = httpx.patch(
        url, content=b'{"spec": {"model": "x"}}', headers={"Content-Type": "application/strategic-merge-patch+json"}
    )
    assert strategic.status_code == 415 and strategic.json()["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in strategic.json()["message"]

    apply = httpx.patch(
        url + "?fieldManager=test",
        content=b"spec:\n  model: x\n",
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert apply.status_code == 415  # apply over an existing object is not emulated: refused, never half-done


def test_server_side_apply_creates_an_absent_object_and_needs_a_field_manager(
    api: EmulatorServer, custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    """How Helm v4 installs: every object of a new release is server-side applied."""
    url = f"{api.url}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/applied"
    headers = {"Content-Type": "application/apply-patch+yaml"}
    document = json.dumps(rollout("applied")).encode()
    unnamed_manager = httpx.patch(url, content=document, headers=headers)
    assert unnamed_manager.status_code == 422 and "fieldManager: Required value" in unnamed_manager.json()["message"]
    created = httpx.patch(url + "?fieldManager=helm", content=document, headers=headers)
    assert created.status_code == 201, created.text
    stored = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "applied")
    assert stored["spec"]["model"] == "iris" and stored["metadata"]["uid"]  # defaulted by the schema like a create
    invalid = httpx.patch(
        url.replace("/applied", "/bad") + "?fieldManager=helm",
        content=json.dumps(rollout("bad", mode="Serverless")).encode(), headers=headers,
    )
    assert invalid.status_code == 422  # validated against the CRD's schema like any create
    again = httpx.patch(url + "?fieldManager=helm", content=document, headers=headers)
    assert again.status_code == 415


def test_schema_validation_rejects_with_the_field_named(
    api: EmulatorServer, custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    create = custom.create_namespaced_custom_object

    enum = api_error(create, GROUP, VERSION, namespace, PLURAL, rollout("a", mode="Serverless"))
    assert enum.status == 422
    assert (
        message(enum)
        == 'ModelRollout.emulator.test "a" is invalid: spec.mode: Unsupported value: "Serverless": supported values: "Knative", "Standard"'
    )
    cause = json.loads(enum.body)["details"]["causes"][0]
    assert (cause["field"], cause["reason"]) == ("spec.mode", "FieldValueNotSupported")

    several = api_error(create, GROUP, VERSION, namespace, PLURAL, rollout("b", model="", steps=[0, 101], interval=5))
    text = message(several)
    assert text.startswith('ModelRollout.emulator.test "b" is invalid: [')
    assert 'spec.model: Invalid value: "": spec.model in body should be at least 1 chars long' in text
    assert "spec.steps[0]: Invalid value: 0: spec.steps[0] in body should be greater than or equal to 1" in text
    assert "spec.steps[1]: Invalid value: 101: spec.steps[1] in body should be less than or equal to 100" in text
    assert 'spec.interval: Invalid value: "integer": spec.interval in body must be of type string: "integer"' in text

    required = api_error(create, GROUP, VERSION, namespace, PLURAL, {**rollout("c"), "spec": {"mode": "Standard"}})
    assert message(required).endswith("spec.model: Required value")

    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("d", modle="typo"))
    assert "modle" not in created["spec"]  # pruned, as a real server does, with a warning
    assert any(w.endswith("unknown field 'spec.modle'") for w in api.emulator.warnings)

    url = f"{api.url}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    warned = httpx.post(url, json=rollout("e", modle="typo"))
    assert warned.status_code == 201 and warned.headers["Warning"] == '299 - "unknown field \\"spec.modle\\""'
    strict = httpx.post(url + "?fieldValidation=Strict", json=rollout("f", modle="typo"))
    assert strict.status_code == 400 and strict.json()["message"] == 'strict decoding error: unknown field "spec.modle"'

    updated = api_error(
        custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, "d", {"spec": {"steps": [1] * 6}}
    )
    assert "spec.steps: Too many: 6: must have at most 5 items" in message(updated)  # updates are validated too
    bad_status = api_error(
        custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "d",
        {"status": {"weight": "ten"}},
    )
    assert "status.weight: Invalid value" in message(bad_status)  # and status writes


def test_crds_a_real_server_rejects_are_rejected(api: EmulatorServer) -> None:
    def create(crd: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{api.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)

    def variant(schema: dict[str, Any], name: str = "widgets.emulator.test") -> dict[str, Any]:
        crd = json.loads(json.dumps(MRO_CRD))
        crd["metadata"]["name"] = name
        crd["spec"]["names"] = {"plural": "widgets", "kind": "Widget"}
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = schema
        return crd

    untyped = create(variant({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}}))
    assert untyped.status_code == 422
    assert (
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"
        in untyped.json()["message"]
    )

    # pydantic's rendering of `str | None` is not structural: types inside anyOf are forbidden.
    optional = create(variant({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}}}))  # fmt: skip
    assert optional.status_code == 422 and "properties[a].anyOf[0].type: Forbidden" in optional.json()["message"]

    referenced = create(variant({"type": "object", "properties": {"spec": {"$ref": "#/definitions/Spec"}}}))
    assert "properties[spec].$ref: Forbidden: $ref is not supported" in referenced.json()["message"]

    bad_default = create(variant({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 1, "default": 0}}}}}))  # fmt: skip
    assert "properties[n].default: Invalid value: 0" in bad_default.json()["message"]

    misnamed = create(variant({"type": "object"}, name="gadgets.emulator.test"))
    assert (
        'metadata.name: Invalid value: "gadgets.emulator.test": must be spec.names.plural+"."+spec.group'
        in misnamed.json()["message"]
    )

    assert httpx.get(f"{api.url}/apis/{GROUP}/{VERSION}/widgets").status_code == 404  # none of them is served


def test_crd_deletion_stops_serving_and_removes_its_objects(tmp_path: Path) -> None:
    server = start_kube_api(tmp_path)
    try:
        server.load_crds([MRO_CRD])
        created = httpx.post(f"{server.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}", json=rollout("iris"))
        assert created.status_code == 201
        assert (
            httpx.delete(
                f"{server.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}"
            ).status_code
            == 200
        )
        assert httpx.get(f"{server.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}").status_code == 404
        assert httpx.get(f"{server.url}/apis/{GROUP}").status_code == 404
        server.load_crds([MRO_CRD])  # re-created: served again, and empty
        assert httpx.get(f"{server.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}").json()["items"] == []
    finally:
        server.stop()


def test_a_new_storage_version_keeps_objects_and_every_served_version_shows_them(tmp_path: Path) -> None:
    server = start_kube_api(tmp_path)
    try:
        server.load_crds([MRO_CRD])
        collection = f"/namespaces/default/{PLURAL}"
        with httpx.Client(base_url=f"{server.url}/apis/{GROUP}", timeout=10.0) as http:
            assert http.post(f"/{VERSION}{collection}", json=rollout("iris")).status_code == 201

            two_versions = json.loads(json.dumps(MRO_CRD))
            beta = {**two_versions["spec"]["versions"][0], "name": "v1beta1", "storage": True}
            two_versions["spec"]["versions"][0]["storage"] = False
            two_versions["spec"]["versions"].append(beta)
            server.load_crds([two_versions])

            assert httpx.get(f"{server.url}/apis/{GROUP}").json()["preferredVersion"]["version"] == "v1beta1"
            shown = http.get(f"/v1beta1{collection}/iris").json()
            assert shown["apiVersion"] == f"{GROUP}/v1beta1" and shown["spec"]["model"] == "iris"
            assert http.get(f"/{VERSION}{collection}/iris").json()["apiVersion"] == f"{GROUP}/{VERSION}"
            crd = httpx.get(
                f"{server.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}"
            ).json()
            assert crd["status"]["storedVersions"] == ["v1alpha1", "v1beta1"]
            assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {
                "NamesAccepted": "True",
                "Established": "True",
            }
    finally:
        server.stop()


# --- watches -------------------------------------------------------------------------------------


def later(delay: float, action: Any) -> threading.Thread:
    """Run `action` in `delay` seconds on another thread (while this one is blocked in a watch)."""

    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_from_a_resource_version_sees_only_later_changes(custom: k8s.CustomObjectsApi, namespace: str) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("before"))
    listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    since = listing["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "before", {"spec": {"model": "wine"}}
    )  # replayed
    writer = later(
        0.5, lambda: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("after"))
    )  # live

    seen = []
    for event in watch.Watch().stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, resource_version=since, timeout_seconds=10
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"], event["object"]["spec"]["model"]))
        if len(seen) == 2:
            break
    writer.join(5)

    assert seen == [("MODIFIED", "before", "wine"), ("ADDED", "after", "iris")]


def test_watch_without_version_starts_with_the_current_objects_and_misses_nothing(
    custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    for index in range(3):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout(f"old-{index}"))

    def burst() -> None:
        for index in range(20):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout(f"new-{index}"))

    writer = later(0.0, burst)  # writes race the watch's initial listing: none may fall between
    expected = {*(f"old-{i}" for i in range(3)), *(f"new-{i}" for i in range(20))}
    names: list[str] = []
    for event in watch.Watch().stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, timeout_seconds=10
    ):
        names.append(event["object"]["metadata"]["name"])
        if set(names) == expected:
            break
    writer.join(5)

    assert sorted(names) == sorted(expected)  # every object, each once


def test_watch_label_selector_turns_relabelling_into_added_and_deleted(
    custom: k8s.CustomObjectsApi, namespace: str
) -> None:
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {**rollout("iris"), "metadata": {"name": "iris", "labels": {"track": "canary"}}},
    )
    since = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["metadata"]["resourceVersion"]

    def relabel(track: str | None) -> None:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "iris", {"metadata": {"labels": {"track": track}}}
        )

    relabel("stable")  # leaves the selection
    relabel("canary")  # comes back
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"model": "wine"}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")

    events = [e["type"] for e in watch.Watch().stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                                       label_selector="track=canary", resource_version=since, timeout_seconds=1)]  # fmt: skip
    assert events == ["DELETED", "ADDED", "MODIFIED", "DELETED"]


def test_watch_ends_with_a_bookmark_and_expires_compacted_versions(tmp_path: Path) -> None:
    server = start_kube_api(tmp_path, change_log_size=3)
    url = f"{server.url}/api/v1/namespaces/default/configmaps"
    try:
        with httpx.Client(timeout=10.0) as http:
            for index in range(5):
                http.post(url, json={"metadata": {"name": f"c{index}"}})
            current = http.get(url).json()["metadata"]["resourceVersion"]

            started = time.monotonic()
            quiet = http.get(
                url,
                params={
                    "watch": "true",
                    "resourceVersion": current,
                    "timeoutSeconds": "1",
                    "allowWatchBookmarks": "true",
                },
            )
            assert 0.9 < time.monotonic() - started < 3.0
            assert [json.loads(line) for line in quiet.text.splitlines()] == [
                {
                    "type": "BOOKMARK",
                    "object": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"resourceVersion": current}},
                }
            ]

            old = http.get(url, params={"watch": "true", "resourceVersion": "1", "timeoutSeconds": "1"})
            (event,) = [json.loads(line) for line in old.text.splitlines()]
            assert (
                event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
            )
    finally:
        server.stop()


# --- KServe's real CRD ---------------------------------------------------------------------------


def inference_service(name: str, **predictor: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {"serving.kserve.io/deploymentMode": "Knative"}},
        "spec": {"predictor": {
            "model": {"modelFormat": {"name": "mlflow"}, "runtime": "kserve-mlserver", "protocolVersion": "v2",
                      "storageUri": "s3://mlflow/1/models/m-1/artifacts"},
            **predictor,
        }},
    }  # fmt: skip


def test_kserve_inference_services_are_validated_against_kserves_crd(
    kube_api: EmulatorServer, kserve_crd: str, kube_namespace: str
) -> None:
    assert kserve_crd == "inferenceservices.serving.kserve.io"
    with kube_api.api_client() as api_client:
        custom = k8s.CustomObjectsApi(api_client)
        isvcs = ("serving.kserve.io", "v1beta1", kube_namespace, "inferenceservices")

        good = inference_service(
            "iris", canaryTrafficPercent=10, logger={"mode": "all", "url": "http://comparator.modelrollout:8080/events"}
        )
        created = custom.create_namespaced_custom_object(*isvcs, good)
        assert created["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert created["spec"]["predictor"]["logger"]["mode"] == "all"

        bad = inference_service("wine", canaryTrafficPercent="ten", logger={"mode": "everything"})
        bad["spec"]["predictor"]["model"]["modelFormat"] = {"version": "2"}
        rejected = api_error(custom.create_namespaced_custom_object, *isvcs, bad)
        assert rejected.status == 422
        text = message(rejected)
        assert text.startswith('InferenceService.serving.kserve.io "wine" is invalid: [')
        assert (
            'spec.predictor.canaryTrafficPercent: Invalid value: "string": spec.predictor.canaryTrafficPercent in body must be of type integer: "string"'
            in text
        )
        assert (
            'spec.predictor.logger.mode: Unsupported value: "everything": supported values: "all", "request", "response"'
            in text
        )
        assert "spec.predictor.model.modelFormat.name: Required value" in text

        typo = inference_service("digits")
        typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
        kept = custom.create_namespaced_custom_object(*isvcs, typo)
        assert "storageURI" not in kept["spec"]["predictor"]["model"]  # silently dropped on a cluster too
        assert (
            f"InferenceService {kube_namespace}/digits: unknown field 'spec.predictor.model.storageURI'"
            in kube_api.emulator.warnings
        )

        promoted = custom.patch_namespaced_custom_object(
            *isvcs, "iris", {"spec": {"predictor": {"canaryTrafficPercent": None}}}
        )
        assert "canaryTrafficPercent" not in promoted["spec"]["predictor"] and promoted["metadata"]["generation"] == 2


# --- kubectl -------------------------------------------------------------------------------------


def test_kubectl_apply_get_patch_against_the_emulator(tmp_path: Path) -> None:
    server = start_kube_api(tmp_path)  # its own: this test creates the CRD through kubectl itself
    try:
        crd_file, cr_file = tmp_path / "crd.yaml", tmp_path / "rollout.yaml"
        crd_file.write_text(yaml.safe_dump(MRO_CRD))
        cr_file.write_text(yaml.safe_dump(rollout("iris", steps=[10, 50])))

        assert (
            "customresourcedefinition.apiextensions.k8s.io/modelrollouts.emulator.test created"
            in server.kubectl("apply", "-f", str(crd_file)).stdout
        )
        server.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=10s")
        assert "modelrollout.emulator.test/iris created" in server.kubectl("apply", "-f", str(cr_file)).stdout

        table = server.kubectl("get", "mro").stdout.splitlines()
        assert table[0].split() == ["NAME", "MODEL", "PHASE", "WEIGHT", "READY", "AGE"]
        assert table[1].split()[:2] == ["iris", "iris"] and len(table[1].split()) == 3  # empty cells print as blanks

        server.kubectl("patch", "mro", "iris", "--type=merge", "-p", '{"spec": {"model": "wine"}}')
        status = {"status": {"phase": "Progressing", "weight": 10, "conditions": [{"type": "Ready", "status": "True"}]}}
        server.kubectl("patch", "mro", "iris", "--subresource=status", "--type=merge", "-p", json.dumps(status))
        assert server.kubectl("get", "mro", "iris").stdout.splitlines()[1].split()[:5] == [
            "iris",
            "wine",
            "Progressing",
            "10",
            "True",
        ]

        shown = json.loads(server.kubectl("get", "mro", "iris", "-o", "json").stdout)
        assert shown["spec"] == {"model": "wine", "mode": "Knative", "interval": "60s", "steps": [10, 50]}
        assert shown["status"]["phase"] == "Progressing" and shown["metadata"]["generation"] == 2

        # A second apply is a three-way merge patch computed from the last-applied annotation:
        # the file still says model=iris, and steps changed.
        cr_file.write_text(yaml.safe_dump(rollout("iris", steps=[20])))
        assert "modelrollout.emulator.test/iris configured" in server.kubectl("apply", "-f", str(cr_file)).stdout
        reapplied = json.loads(server.kubectl("get", "modelrollouts.emulator.test", "iris", "-o", "json").stdout)
        assert reapplied["spec"]["model"] == "iris" and reapplied["spec"]["steps"] == [20]
        assert reapplied["status"]["phase"] == "Progressing"  # apply does not touch status

        cr_file.write_text(yaml.safe_dump(rollout("bad", mode="Serverless")))
        refused = server.kubectl("apply", "-f", str(cr_file), check=False)
        assert refused.returncode != 0 and 'spec.mode: Unsupported value: "Serverless"' in refused.stderr

        strategic = server.kubectl(
            "patch", "mro", "iris", "-p", '{"spec": {"model": "x"}}', check=False
        )  # default --type=strategic
        assert (
            strategic.returncode != 0 and "application/strategic-merge-patch+json is not supported" in strategic.stderr
        )

        assert 'modelrollout.emulator.test "iris" deleted' in server.kubectl("delete", "mro", "iris").stdout
        assert "No resources found" in server.kubectl("get", "mro").stderr
        assert server.emulator.internal_errors == []
    finally:
        server.stop()


def test_kubectl_apply_of_a_crd_too_large_for_client_side_apply_fails_as_on_a_cluster(tmp_path: Path) -> None:
    from tests.kube.kserve_crd import crd_path

    KSERVE_CRD = crd_path()

    server = start_kube_api(tmp_path)
    try:
        refused = server.kubectl("apply", "-f", str(KSERVE_CRD), check=False)
        assert refused.returncode != 0
        assert (
            'The CustomResourceDefinition "inferenceservices.serving.kserve.io" is invalid: metadata.annotations: Too long: must have at most 262144 bytes'
            in refused.stderr
        )
        assert "created" in server.kubectl("create", "-f", str(KSERVE_CRD)).stdout  # what KServe's docs do instead
    finally:
        server.stop()


# --- kopf ----------------------------------------------------------------------------------------


def test_a_kopf_operator_reacts_to_a_custom_resource_and_patches_its_status(
    api: EmulatorServer, custom: k8s.CustomObjectsApi, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = kopf.OperatorRegistry()

    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))  # read by kopf's own kubeconfig login

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()  # keep status ours
        settings.watching.server_timeout = 5

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def started(body: kopf.Body, patch: kopf.Patch, spec: kopf.Spec, **_: Any) -> None:
        patch.status["phase"] = "Progressing"
        patch.status["observedSteps"] = len(spec.get("steps", []))
        kopf.info(body, reason="Started", message=f"rolling out {spec['model']}")  # a Kubernetes Event

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec.steps", registry=registry)
    def restepped(patch: kopf.Patch, new: Any, **_: Any) -> None:
        patch.status["observedSteps"] = len(new or [])

    stop, ready = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry, standalone=True, namespaces=[namespace], stop_flag=stop, ready_flag=ready
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    operator = threading.Thread(target=run, name="kopf-operator", daemon=True)
    operator.start()
    try:
        assert ready.wait(15), f"kopf did not get ready: {failures}"
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout("iris", steps=[10, 50]))

        def status() -> dict[str, Any]:
            return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris").get("status", {})

        wait_until(lambda: status() == {"phase": "Progressing", "observedSteps": 2}, "kopf set the status on create")
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
        assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]

        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"steps": [5, 10, 20]}}
        )
        wait_until(lambda: status().get("observedSteps") == 3, "kopf saw the spec update through its watch")

        with api.api_client() as api_client:
            core = k8s.CoreV1Api(api_client)

            def messages() -> list[str]:
                return [
                    e.message
                    for e in core.list_namespaced_event(namespace, field_selector="involvedObject.name=iris").items
                ]

            wait_until(lambda: any("rolling out iris" in m for m in messages()), "kopf posted its log line as an Event")
    finally:
        stop.set()
        operator.join(15)
    assert not operator.is_alive() and not failures, failures


def wait_until(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(0.1)


# --- the session fixtures ------------------------------------------------------------------------


def test_session_fixtures_give_a_kubeconfig_and_a_fresh_namespace(
    kube_api: EmulatorServer, kube_namespace: str
) -> None:
    config = yaml.safe_load(kube_api.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == kube_api.url and kube_api.url.startswith("http://127.0.0.1:")
    listed = kube_api.kubectl("get", "namespace", kube_namespace, "-o", "jsonpath={.status.phase}").stdout
    assert listed == "Active"
    with kube_api.api_client() as api_client:
        assert k8s.CoreV1Api(api_client).list_namespaced_config_map(kube_namespace).items == []

    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "seed", "namespace": kube_namespace},
        "data": {"a": "1"},
    }
    (first,) = kube_api.apply(document)
    (second,) = kube_api.apply({**document, "data": {"a": "2"}})  # exists: replaced
    assert second["metadata"]["uid"] == first["metadata"]["uid"] and second["data"] == {"a": "2"}


# --- the pure parts: patch formats, selectors, printer-column JSONPath ---------------------------


def test_json_patch_follows_rfc_6902() -> None:
    doc = {"a/b": {"c~d": 1}, "list": [1, 2, 3], "keep": True}
    ops = [
        {"op": "add", "path": "/list/-", "value": 4},
        {"op": "add", "path": "/list/0", "value": 0},
        {"op": "remove", "path": "/list/1"},
        {"op": "replace", "path": "/a~1b/c~0d", "value": 2},
        {"op": "copy", "from": "/a~1b", "path": "/copied"},
        {"op": "move", "from": "/keep", "path": "/moved"},
        {"op": "test", "path": "/list", "value": [0, 2, 3, 4]},
    ]
    assert json_patch(doc, ops) == {"a/b": {"c~d": 2}, "list": [0, 2, 3, 4], "copied": {"c~d": 2}, "moved": True}
    assert doc["list"] == [1, 2, 3]  # the input is untouched

    for bad in ([{"op": "test", "path": "/keep", "value": 1}],  # True is not 1 in JSON
                [{"op": "replace", "path": "/missing", "value": 1}],
                [{"op": "add", "path": "/list/9", "value": 1}],
                [{"op": "remove", "path": "/list/01"}]):  # fmt: skip
        with pytest.raises(PatchError):
            json_patch(doc, bad)
    with pytest.raises(MalformedPatch):
        json_patch(doc, {"op": "add"})


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


def test_strategic_merge_patch_merges_named_lists_for_built_ins() -> None:
    pod = {"spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "sidecar", "image": "s:1"}]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                      "containers": [{"name": "app", "image": "a:2"}, {"name": "sidecar", "$patch": "delete"}]}}  # fmt: skip
    assert strategic_merge_patch(pod, patch) == {"spec": {"containers": [{"name": "app", "image": "a:2"}]}}


def test_selectors_and_printer_column_paths() -> None:
    assert [str(r.op) for r in parse_label_selector("a in (x, y),b notin (z),c,!d,e=f,g!=h")] == [
        "in",
        "notin",
        "exists",
        "!exists",
        "in",
        "notin",
    ]
    with pytest.raises(KubernetesError):
        parse_label_selector("a in x")
    status = {"status": {"conditions": [{"type": "Ready", "status": "True"}],
                         "traffic": [{"tag": "prev", "percent": 90}, {"latestRevision": True, "percent": 10}]}}  # fmt: skip
    assert json_path(status, ".status.conditions[?(@.type=='Ready')].status") == ["True"]
    assert json_path(status, ".status.traffic[?(@.latestRevision==true)].percent") == [10]
    assert json_path(status, "{.status.traffic[*].percent}") == [90, 10]
    assert json_path(status, ".status.missing[0]") == []
