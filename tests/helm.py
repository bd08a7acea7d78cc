"""Real Helm for the tests: Helm v4's own Go SDK, through PyPI's `helm-python-sdk` (a test
dependency; a manylinux wheel that carries the library, no binary to download).

`Helm` answers what `helm template`, `helm lint` and Helm's values-schema check answer, for one
chart directory: rendered objects per release name and namespace, lint findings, and refusals as
`HelmError` with Helm's own message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml
from helm_python import HelmError

__all__ = ["Helm", "HelmError"]

# What `helm template` calls the release and its namespace when told nothing.
DEFAULT_RELEASE = "release-name"
DEFAULT_NAMESPACE = "default"


class Helm:
    def __init__(self, chart: Path, release: str = DEFAULT_RELEASE, namespace: str = DEFAULT_NAMESPACE) -> None:
        """`release` and `namespace` are `helm template`'s NAME and -n."""
        self.chart = chart
        self.release = release
        self.namespace = namespace

    def values(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """values.yaml merged with `overrides` as `helm -f` merges them, after Helm's schema check."""
        with helm_python.Chart.load(self.chart) as chart:
            chart.validate_schema(overrides or {})
            return chart.merge_values(overrides or {})

    def render(
        self, overrides: dict[str, Any] | None = None, release: str | None = None, namespace: str | None = None
    ) -> dict[str, str]:
        """Each template's output by its path below templates/ (`NOTES.txt`, `charts/x/templates/y.yaml`
        for a subchart's), as an install computes it: the values checked against every schema first."""
        with helm_python.Chart.load(self.chart) as chart:
            rendered = chart.render(
                overrides or {}, name=release or self.release, namespace=namespace or self.namespace, is_install=True
            )
        prefix = f"{self.chart.name}/"
        return {
            path.removeprefix(prefix).replace("templates/", "", 1) if path.startswith(prefix + "templates/") else path.removeprefix(prefix): text
            for path, text in rendered.items()
        }

    def objects(
        self, overrides: dict[str, Any] | None = None, release: str | None = None, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """The objects of the rendered .yaml templates (NOTES.txt and empty documents left out)."""
        docs = []
        for name, text in self.render(overrides, release, namespace).items():
            if name.endswith(".yaml"):
                docs += [d for d in yaml.safe_load_all(text) if d]
        return docs

    def lint(self, overrides: dict[str, Any] | None = None, kube_version: str | None = None) -> list[str]:
        """`helm lint --strict`'s findings of warning or error severity, as "path: message" lines."""
        report = helm_python.lint(
            self.chart, overrides or {}, strict=True, namespace=self.namespace, kube_version=kube_version
        )
        findings = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
        return findings + list(report["errors"])
