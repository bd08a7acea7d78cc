"""The README and docs/ point at what exists: every relative link resolves, and the layout in
docs/architecture.md names every room and module of the product that it lists, no more."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_resolves() -> None:
    broken = [
        f"{doc.relative_to(ROOT)}: {target}"
        for doc in DOCS
        for target in LINK.findall(doc.read_text(encoding="utf-8"))
        if "://" not in target and not (doc.parent / target).exists()
    ]
    assert broken == []


def layout_block() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text[text.index("## The layout") : text.index("## The import rule")]
    return section.split("```")[1]


def test_the_layout_names_every_subpackage() -> None:
    block = layout_block()
    packages = sorted(
        path.parent.relative_to(ROOT).as_posix() + "/"
        for root in ("canary", "controller", "registry")
        for path in (ROOT / root).rglob("__init__.py")
    )
    # A subpackage is written as its last part under its parent ("  decision/"), a top level whole.
    missing = [p for p in packages if not re.search(rf"(^|\s){re.escape(p.rsplit('/', 2)[-2])}/", block, re.M)]
    assert missing == []


def test_every_module_the_layout_names_exists() -> None:
    named = set(re.findall(r"\b([a-z_]+\.py)\b", layout_block()))
    existing = {path.name for root in ("canary", "controller", "registry") for path in (ROOT / root).rglob("*.py")}
    assert named - existing == set()
