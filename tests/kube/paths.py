"""Where a request points: the API group/version, resource, namespace, name and subresource.

kmock's own parser fails on `/api/v1/namespaces` (a 500) and reads `/api/v1/namespaces/x` as "all
of namespace x", so the emulator parses paths itself. Namespaces are the one resource whose own
objects live at the same depth as a namespaced collection: `/api/v1/namespaces/x/status` is the
status of namespace x, `/api/v1/namespaces/x/pods` the pods in it.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True)
class Address:
    group: str | None  # None: not an API path at all ("" is the core group)
    version: str | None
    plural: str | None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def is_api(self) -> bool:
        return self.group is not None

    @property
    def is_resource(self) -> bool:
        """A collection or an object (as opposed to discovery, /version, /openapi...)."""
        return self.group is not None and self.version is not None and self.plural is not None


def parse_path(path: str) -> Address:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 1 and parts[0] == "api":
        group, rest = "", parts[1:]
    elif len(parts) >= 2 and parts[0] == "apis":
        group, rest = parts[1], parts[2:]
    else:
        return Address(group=None, version=None, plural=None)
    if not rest:
        return Address(group=group, version=None, plural=None)
    version, rest = rest[0], rest[1:]
    if not rest:
        return Address(group=group, version=version, plural=None)

    namespace: str | None = None
    is_namespace_object = (
        group == ""
        and rest[0] == "namespaces"
        and (len(rest) <= 2 or (len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES))
    )
    if rest[0] == "namespaces" and len(rest) >= 3 and not is_namespace_object:
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) >= 2 else None
    subresource = "/".join(rest[2:]) or None
    return Address(group, version, plural, namespace, name, subresource)
