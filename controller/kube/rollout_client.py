"""The ModelRollout custom resource in a cluster, read and patched as `kubectl` would: through the
official client, as camelCase dicts, with every API error turned into one `RolloutRequestError` line that
names the resource, the server and the cause. Used by the kubectl plugin and by `report --kube`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from canary.decision.spec import KIND, RolloutStatus
from controller.kube import rollout_resource
from controller.kube.cluster_access import REQUEST_TIMEOUT, Cluster, get_json, reaching
from controller.kube.commands import COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION
from controller.kube.crd import CRD_NAME, GROUP, PLURAL, VERSION

CRD_INSTALL = "kubectl apply -f manifests/crd/"


class RolloutRequestError(Exception):
    """A request about a ModelRollout the cluster refused or answered with what is no rollout (not
    found, forbidden, no CRD, a status that does not parse): one line naming the cause."""


def parse_status(raw: Mapping[str, Any] | None, where: str = "status") -> RolloutStatus:
    """The RolloutStatus in a CR's `status` (a fresh one when there is none yet)."""
    try:
        return rollout_resource.parse_status(raw)
    except rollout_resource.ResourceError as err:
        raise RolloutRequestError(f"{where}: {err}") from None


def pending_command(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (command, id) in the resource's annotations that the operator has not taken yet."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if COMMAND_ANNOTATION not in annotations:
        return None
    return annotations[COMMAND_ANNOTATION], annotations.get(COMMAND_ID_ANNOTATION, "")


def _event_time(event: Mapping[str, Any]) -> str:
    """When an Event last happened, as `YYYY-MM-DDTHH:MM:SSZ` (UTC), from whichever field is set."""
    for value in (
        event.get("lastTimestamp"),
        event.get("eventTime"),
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if value:
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "0000-00-00T00:00:00Z"


@dataclass
class Rollouts:
    """The ModelRollouts of one namespace, through the official client with camelCase dicts."""

    cluster: Cluster
    custom: Any = field(init=False)

    def __post_init__(self) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(self.cluster.api)

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    def get(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            with reaching(self.cluster):
                return self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
        except ApiException as err:
            if err.status == 404:
                raise self._not_found(name) from None
            raise self.api_error(err, f"reading ModelRollout {self.namespace}/{name}") from None

    def names(self) -> list[str]:
        """Names of the ModelRollouts in the namespace; a missing CRD is an error saying so."""
        from kubernetes.client.exceptions import ApiException

        try:
            with reaching(self.cluster):
                listing = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
                )
        except ApiException as err:
            if err.status == 404:
                raise self._crd_missing() from None
            raise self.api_error(err, f"listing ModelRollouts in namespace {self.namespace!r}") from None
        return sorted(item["metadata"]["name"] for item in listing.get("items", []))

    def send(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a merge patch to the resource (a command's annotations)."""
        from kubernetes.client.exceptions import ApiException

        try:
            with reaching(self.cluster):
                # Named explicitly: a dict body must go as a JSON merge patch (custom resources
                # take no strategic merge); the client's default for this call is the same.
                return self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, patch,
                    _content_type="application/merge-patch+json", _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
        except ApiException as err:
            if err.status == 404:
                raise self._not_found(name) from None
            raise self.api_error(err, f"patching ModelRollout {self.namespace}/{name}") from None

    def events(self, obj: Mapping[str, Any], limit: int) -> list[dict[str, str]]:
        """The rollout's most recent core/v1 Events, oldest first, shaped for render_status."""
        from kubernetes.client.exceptions import ApiException

        name, uid = obj["metadata"]["name"], obj["metadata"].get("uid")
        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        try:
            listing = get_json(
                self.cluster,
                "/api/v1/namespaces/{namespace}/events",
                {"namespace": self.namespace},
                [("fieldSelector", selector)],
            )
        except ApiException as err:
            if err.status == 403:
                return []  # status is still worth showing to someone who may not read events
            raise self.api_error(err, f"listing events in namespace {self.namespace!r}") from None
        items = listing.get("items", [])
        # A rollout deleted and created again under the same name keeps its name, not its uid.
        mine = [e for e in items if not uid or (e.get("involvedObject") or {}).get("uid") in (None, "", uid)]
        shaped = [
            {
                "time": _event_time(e),
                "type": str(e.get("type") or "Normal"),
                "reason": str(e.get("reason") or ""),
                "message": str(e.get("message") or "").replace("\n", " "),
            }
            for e in mine
        ]
        shaped.sort(key=lambda e: e["time"])
        return shaped[-limit:] if limit > 0 else []

    def changes(self, name: str, resource_version: str, seconds: int) -> Iterator[dict[str, Any]]:
        """Watch events (`{"type", "object"}` dicts) of one rollout after `resource_version`, until
        the server ends the watch after `seconds`.

        Read line by line here rather than through kubernetes.watch: that helper retries on its
        own, yields None for blank lines and fails on ERROR events when not deserializing.
        """
        with reaching(self.cluster):
            response = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=seconds,
                watch=True,
                _preload_content=False,
                # The server ends the watch after `seconds`; the client's read timeout only guards
                # against a server that stops talking altogether.
                _request_timeout=(REQUEST_TIMEOUT, seconds + REQUEST_TIMEOUT),
            )  # fmt: skip
            try:
                pending = b""
                for chunk in response.stream(amt=None, decode_content=True):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
            finally:
                response.release_conn()

    def _not_found(self, name: str) -> RolloutRequestError:
        known = self.names()  # raises the CRD error when the resource type itself is unknown
        listing = ", ".join(known) if known else "none"
        return RolloutRequestError(f"no ModelRollout named {name!r} in namespace {self.namespace!r} (known: {listing})")

    def _crd_missing(self) -> RolloutRequestError:
        return RolloutRequestError(
            f"the ModelRollout CRD ({CRD_NAME}) is not installed on {self.cluster.server}: "
            f"install it with `{CRD_INSTALL}`"
        )

    def api_error(self, err: Any, doing: str) -> RolloutRequestError:
        try:
            message = json.loads(err.body or "{}").get("message") or err.reason
        except (ValueError, AttributeError):
            message = err.reason
        what = {401: "unauthorized", 403: "forbidden"}.get(err.status, f"HTTP {err.status}")
        return RolloutRequestError(f"{doing} on {self.cluster.server}: {what}: {message}")
