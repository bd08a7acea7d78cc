"""A subset of Helm's template engine, so the tests can render charts/modelrollout/ without Helm.

No helm binary can be installed here for Linux and Python 3.11: no Linux wheel on PyPI ships one
(`helm-package` has Windows and macOS binaries only; `helm-sdkpy` needs Python >= 3.12), and
neither Debian nor npm packages it. So `HelmSubset` renders the chart itself: Go's text/template
semantics (trim markers, pipelines, if/else/with/range/define) and the Sprig functions this chart
uses, with values merged as `helm -f` merges them and checked against values.schema.json.

It is strict where Helm is lenient: an unknown function, a missing value printed, a variable other
than `$`, or anything else outside the subset raises `TemplateError`, so the chart cannot silently
drift into constructs this renderer does not understand. Grow the subset (with a test in
tests/unit/test_manifests.py on Go's documented behaviour) before the chart uses something new.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# What `helm template` calls the release and its namespace when told nothing.
DEFAULT_RELEASE = "release-name"
DEFAULT_NAMESPACE = "default"


class TemplateError(Exception):
    """The chart (or the values) uses something outside the subset, or something Helm would refuse."""


@dataclass
class _Action:
    text: str
    trim_left: bool
    trim_right: bool


@dataclass
class _Block:
    kind: str  # root | if | with | range | define
    branches: list[tuple[Any, list[Any]]] = field(default_factory=list)  # (pipeline or None, body)
    name: str = ""


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<field>(?:\$)?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\$|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[()|])
    )""",
    re.VERBOSE,
)
_NOTHING = object()


def _lex(source: str, where: str) -> list[str | _Action]:
    """Text and actions, with Go's trim markers applied (`{{- ` and ` -}}` eat adjacent whitespace)."""
    items: list[str | _Action] = []
    pos = 0
    while (start := source.find("{{", pos)) >= 0:
        items.append(source[pos:start])
        k = start + 2
        trim_left = source[k : k + 1] == "-" and source[k + 1 : k + 2] in (" ", "\t", "\r", "\n")
        k += 2 if trim_left else 0
        if source.startswith("/*", k):  # a comment: nothing inside counts, quotes and braces included
            end = source.find("*/", k + 2)
            close = re.compile(r"( -)?}}").match(source, end + 2) if end >= 0 else None
            if close is None:
                raise TemplateError(f"{where}: a comment must end with */}} or */ -}}")
            items.append(_Action("", trim_left, bool(close.group(1))))
            pos = close.end()
            continue
        i, quote = k, ""
        while i < len(source):
            ch = source[i]
            if quote:
                if ch == "\\" and quote == '"':
                    i += 1
                elif ch == quote:
                    quote = ""
            elif ch in '"`':
                quote = ch
            elif source.startswith("}}", i):
                break
            i += 1
        else:
            raise TemplateError(f"{where}: unclosed action at offset {start}")
        text = source[k:i]
        trim_right = bool(re.search(r"\s-$", text))
        items.append(_Action(text[:-1].strip() if trim_right else text.strip(), trim_left, trim_right))
        pos = i + 2
    items.append(source[pos:])
    for n, item in enumerate(items):  # Go trims all spaces, tabs and newlines next to the marker
        if isinstance(item, _Action):
            if item.trim_left and isinstance(items[n - 1], str):
                items[n - 1] = str(items[n - 1]).rstrip(" \t\r\n")
            if item.trim_right and isinstance(items[n + 1], str):
                items[n + 1] = str(items[n + 1]).lstrip(" \t\r\n")
    return items


def _parse_pipeline(text: str, where: str) -> list[list[tuple[str, Any]]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise TemplateError(f"{where}: cannot read {text[pos:]!r} (outside the supported subset)")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    pipeline, rest = _commands(tokens, where)
    if rest:
        raise TemplateError(f"{where}: unbalanced ')' in {text!r}")
    return pipeline


def _commands(tokens: list[tuple[str, str]], where: str) -> tuple[list[list[tuple[str, Any]]], list[tuple[str, str]]]:
    pipeline: list[list[tuple[str, Any]]] = [[]]
    while tokens:
        kind, value = tokens.pop(0)
        if kind == "punct" and value == ")":
            return pipeline, [(kind, value), *tokens]
        if kind == "punct" and value == "|":
            pipeline.append([])
        elif kind == "punct":  # "("
            inner, tokens = _commands(tokens, where)
            if not tokens or tokens[0] != ("punct", ")"):
                raise TemplateError(f"{where}: unclosed '('")
            tokens = tokens[1:]
            pipeline[-1].append(("pipe", inner))
        elif kind == "str":
            pipeline[-1].append(("lit", json.loads(value)))
        elif kind == "raw":
            pipeline[-1].append(("lit", value[1:-1]))
        elif kind == "num":
            pipeline[-1].append(("lit", float(value) if "." in value else int(value)))
        elif kind == "field":
            if value.startswith("$") and value != "$" and not value.startswith("$."):
                raise TemplateError(f"{where}: variables other than $ are outside the subset")
            root = value.startswith("$")
            names = [n for n in value.lstrip("$").split(".") if n]
            pipeline[-1].append(("field", (root, names)))
        else:
            pipeline[-1].append(("ident", value))
    if any(not command for command in pipeline):
        raise TemplateError(f"{where}: empty command in a pipeline")
    return pipeline, []


def _parse(source: str, where: str) -> tuple[_Block, dict[str, _Block]]:
    root = _Block("root", [(None, [])])
    stack, defines = [root], {}
    for item in _lex(source, where):
        body = stack[-1].branches[-1][1]
        if isinstance(item, str):
            if item:
                body.append(item)
            continue
        word, _, rest = item.text.partition(" ")
        if not item.text:  # a comment
            continue
        if word in ("if", "with", "range"):
            block = _Block(word, [(_parse_pipeline(rest, where), [])])
            body.append(block)
            stack.append(block)
        elif word == "define":
            block = _Block("define", [(None, [])], name=json.loads(rest.strip()))
            defines[block.name] = block
            stack.append(block)
        elif word == "else":
            block = stack[-1]
            if block.kind not in ("if", "with", "range") or block.branches[-1][0] is None:
                raise TemplateError(f"{where}: misplaced {{{{ {item.text} }}}}")
            if rest.startswith("if ") and block.kind == "if":
                block.branches.append((_parse_pipeline(rest[3:], where), []))
            elif not rest:
                block.branches.append((None, []))
            else:
                raise TemplateError(f"{where}: {{{{ {item.text} }}}} is outside the subset")
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError(f"{where}: unexpected {{{{ end }}}}")
            stack.pop()  # a define was never part of the body around it
        elif word in ("template", "block", "break", "continue"):
            raise TemplateError(f"{where}: {{{{ {word} }}}} is outside the subset")
        else:
            body.append(_parse_pipeline(item.text, where))
    if len(stack) != 1:
        raise TemplateError(f"{where}: {{{{ {stack[-1].kind} }}}} without {{{{ end }}}}")
    return root, defines


def _truth(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, dict)):
        return bool(value)
    return True


def _printed(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    # Helm would print "<no value>" or a Go map: never what a manifest means.
    raise TemplateError(f"{where}: printing {value!r}")


def _to_yaml(value: Any) -> str:
    text = yaml.safe_dump(value, sort_keys=True, default_flow_style=False)
    return text.removesuffix("\n...\n").removesuffix("\n")  # Helm's toYaml drops the final newline


def _indent(width: int, text: str) -> str:
    pad = " " * width
    return pad + text.replace("\n", "\n" + pad)


def _printf(template: str, *args: Any) -> str:
    values = iter(args)

    def one_verb(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(0) not in ("%s", "%d", "%v"):
            raise TemplateError(f"printf verb {match.group(0)} is outside the subset")
        return _printed(next(values), "printf")

    return re.sub(r"%.", one_verb, template)


def _trunc(length: int, text: str) -> str:
    return text[:length] if length >= 0 else text[length:]


class HelmSubset:
    """Renders a chart's templates with Go's text/template semantics, within this chart's needs."""

    def __init__(self, chart: Path, release: str = DEFAULT_RELEASE, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Parses every file of `chart`/templates; `release` and `namespace` are `helm template`'s NAME and -n."""
        self.chart = chart
        self.release = release
        self.namespace = namespace
        self.files: dict[str, _Block] = {}
        self._top: dict[str, Any] = {}
        self.defines: dict[str, _Block] = {}
        for path in sorted((chart / "templates").iterdir()):
            tree, defines = _parse(path.read_text(), path.name)
            overlap = set(defines) & set(self.defines)
            if overlap:
                raise TemplateError(f"{path.name}: {sorted(overlap)} defined twice")
            self.defines.update(defines)
            if not path.name.startswith("_"):
                self.files[path.name] = tree
        self.functions: dict[str, Callable[..., Any]] = {
            "include": self._include,
            "toYaml": _to_yaml,
            "nindent": lambda width, text: "\n" + _indent(width, text),
            "indent": _indent,
            "quote": lambda *values: " ".join(
                json.dumps(_printed(v, "quote"), ensure_ascii=False) for v in values if v is not None
            ),
            "default": lambda fallback, value=None: value if _truth(value) else fallback,
            "trunc": _trunc,
            "trimSuffix": lambda suffix, text: text.removesuffix(suffix),
            "contains": lambda part, text: part in text,
            "replace": lambda old, new, text: text.replace(old, new),
            "printf": _printf,
            "join": lambda sep, items: sep.join(_printed(i, "join") for i in items),
            "eq": lambda a, b: a == b,
            "sha256sum": lambda text: hashlib.sha256(text.encode()).hexdigest(),
        }

    def values(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """values.yaml merged with `overrides` as `helm -f` merges them, then checked as Helm checks them."""

        def merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
            for key, value in extra.items():
                if isinstance(value, dict) and isinstance(into.get(key), dict):
                    merge(into[key], value)
                else:
                    into[key] = copy.deepcopy(value)
            return into

        values = merge(yaml.safe_load((self.chart / "values.yaml").read_text()), overrides or {})
        schema = json.loads((self.chart / "values.schema.json").read_text())
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(values)
        ]
        if errors:
            raise TemplateError("values don't meet the schema: " + "; ".join(errors))
        return values

    def render(
        self, overrides: dict[str, Any] | None = None, release: str | None = None, namespace: str | None = None
    ) -> dict[str, str]:
        """Each template's output by file name (NOTES.txt included), as `helm template` computes it.

        `release` and `namespace` default to the ones given to the constructor.
        """
        meta = yaml.safe_load((self.chart / "Chart.yaml").read_text())
        top = {
            "Values": self.values(overrides),
            "Release": {
                "Name": release or self.release,
                "Namespace": namespace or self.namespace,
                "Service": "Helm",
                "IsInstall": True,
                "IsUpgrade": False,
                "Revision": 1,
            },
            "Chart": {
                "Name": meta["name"],
                "Version": meta["version"],
                "AppVersion": meta.get("appVersion"),
                "Description": meta.get("description"),
            },
        }
        return {name: self.execute(name, top) for name in self.files}

    def execute(self, name: str, top: dict[str, Any]) -> str:
        """One template file's output with `top` as both `.` and `$`."""
        self._top = top
        return self._walk(self.files[name].branches[0][1], top, top, name)

    def objects(
        self, overrides: dict[str, Any] | None = None, release: str | None = None, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """The objects of the rendered .yaml templates (NOTES.txt and empty documents left out)."""
        docs = []
        for name, text in self.render(overrides, release, namespace).items():
            if name.endswith(".yaml"):
                docs += [d for d in yaml.safe_load_all(text) if d]
        return docs

    # --- evaluation -------------------------------------------------------------------------------

    def _include(self, name: str, dot: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"include of undefined template {name!r}")
        return self._walk(self.defines[name].branches[0][1], dot, self._top, name)

    def _walk(self, nodes: list[Any], dot: Any, top: Any, where: str) -> str:
        out = []
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, list):
                out.append(_printed(self._pipeline(node, dot, top, where), where))
            elif node.kind == "if":
                for condition, body in node.branches:
                    if condition is None or _truth(self._pipeline(condition, dot, top, where)):
                        out.append(self._walk(body, dot, top, where))
                        break
            elif node.kind == "with":
                value = self._pipeline(node.branches[0][0], dot, top, where)
                if _truth(value):
                    out.append(self._walk(node.branches[0][1], value, top, where))
                elif len(node.branches) > 1:
                    out.append(self._walk(node.branches[1][1], dot, top, where))
            elif node.kind == "range":
                value = self._pipeline(node.branches[0][0], dot, top, where)
                items = [value[k] for k in sorted(value)] if isinstance(value, dict) else value or []
                if not isinstance(items, list):
                    raise TemplateError(f"{where}: range over {value!r}")
                for item in items:
                    out.append(self._walk(node.branches[0][1], item, top, where))
                if not items and len(node.branches) > 1:
                    out.append(self._walk(node.branches[1][1], dot, top, where))
        return "".join(out)

    def _pipeline(self, pipeline: list[list[tuple[str, Any]]], dot: Any, top: Any, where: str) -> Any:
        value: Any = _NOTHING
        for command in pipeline:
            value = self._command(command, dot, top, where, value)
        return value

    def _command(self, command: list[tuple[str, Any]], dot: Any, top: Any, where: str, piped: Any) -> Any:
        kind, head = command[0]
        if kind == "ident" and head not in ("true", "false", "nil"):
            if head not in self.functions:
                raise TemplateError(f"{where}: function {head!r} is outside the subset")
            args = [self._operand(op, dot, top, where) for op in command[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                return self.functions[head](*args)
            except TypeError as err:
                raise TemplateError(f"{where}: {head}: {err}") from None
        if len(command) > 1 or piped is not _NOTHING:
            raise TemplateError(f"{where}: {head!r} is not a function and takes no arguments")
        return self._operand(command[0], dot, top, where)

    def _operand(self, operand: tuple[str, Any], dot: Any, top: Any, where: str) -> Any:
        kind, value = operand
        if kind == "lit":
            return value
        if kind == "pipe":
            return self._pipeline(value, dot, top, where)
        if kind == "ident":
            if value in ("true", "false", "nil"):
                return {"true": True, "false": False, "nil": None}[value]
            return self._command([operand], dot, top, where, _NOTHING)
        from_root, names = value
        current = top if from_root else dot
        for name in names:
            if not isinstance(current, dict):
                raise TemplateError(
                    f"{where}: nil pointer evaluating .{name}"
                    if current is None
                    else f"{where}: .{name} of {current!r}"
                )
            current = current.get(name)  # a missing map key is Go's zero value: nil
        return current
