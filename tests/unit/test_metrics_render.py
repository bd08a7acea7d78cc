"""`render` and label escaping, without Prometheus (the integration tests check the same escaping
against a real one)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canary.decision import templates
from canary.decision.metrics import QueryError, escape_label_value, render

ALL = {
    "rollout": "iris",
    "model": "iris-classifier",
    "namespace": "default",
    "stable_version": "3",
    "candidate_version": "4",
    "version": "4",
    "role": "canary",
    "interval": "1m",
}


def test_replaces_every_placeholder_whatever_the_spacing() -> None:
    query = 'x{rollout="{{rollout}}",version="{{ version }}",role="{{   role\t}}"}[{{ interval }}]'
    assert render(query, ALL) == 'x{rollout="iris",version="4",role="canary"}[1m]'


def test_text_without_placeholders_is_unchanged() -> None:
    query = 'sum(rate(x{a="b"}[5m])) / on() group_left vector(1)'
    assert render(query, {}) == query


def test_unknown_variable_is_named_with_the_known_ones() -> None:
    with pytest.raises(QueryError) as error:
        render('x{a="{{ modelname }}"}', ALL)
    message = str(error.value)
    assert "unknown variable 'modelname'" in message
    assert all(name in message for name in templates.TEMPLATE_VARIABLES)
    assert "\n" not in message


def test_missing_value_names_the_variable() -> None:
    with pytest.raises(QueryError, match="no value for variable 'role'"):
        render('x{version="{{ version }}",role="{{ role }}"}', {"version": "1"})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(QueryError) as error:
        render("{{ a }} {{ version }} {{ b }}", {})
    message = str(error.value)
    assert "'a'" in message and "'b'" in message and "no value for variable 'version'" in message


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('x{a="{{ model-name }}"}', "malformed placeholder '{{ model-name }}'"),
        ('x{a="{{ }}"}', "malformed placeholder '{{ }}'"),
        ('x{a="{{ 1st }}"}', "malformed placeholder"),
        ('x{a="{{ version"}', "unclosed '{{' placeholder"),
    ],
)
def test_malformed_placeholders_are_errors(query: str, problem: str) -> None:
    with pytest.raises(QueryError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        render(query, ALL)


def test_query_error_is_a_value_error() -> None:
    # Callers that validate specs catch ValueError; the analysis catches MetricsError.
    with pytest.raises(ValueError):
        render("{{ nope }}", ALL)


def test_hostile_value_cannot_close_the_label_matcher() -> None:
    hostile = 'x"} or vector(1) or x{a="'
    rendered = render('up{version="{{ version }}"}', {"version": hostile})
    assert rendered == 'up{version="x\\"} or vector(1) or x{a=\\""}'


def test_backslash_is_escaped_before_quotes() -> None:
    # A value ending in a backslash would otherwise escape the closing quote of the matcher.
    assert escape_label_value("v1\\") == "v1\\\\"
    assert escape_label_value('a\\"b') == 'a\\\\\\"b'


def test_line_breaks_are_escaped() -> None:
    # PromQL strings may not contain a raw newline.
    assert escape_label_value("a\nb\rc") == "a\\nb\\rc"


def test_values_are_not_rendered_again() -> None:
    rendered = render('x{a="{{ rollout }}",b="{{ version }}"}', {"rollout": "{{ version }}", "version": "2"})
    assert rendered == 'x{a="{{ version }}",b="2"}'


def test_values_are_otherwise_inserted_verbatim() -> None:
    assert render("{{ model }}", {"model": "Ünïcode model 'v2' `x` {y}"}) == "Ünïcode model 'v2' `x` {y}"


@given(st.text())
def test_escaped_value_reads_back_as_the_original(value: str) -> None:
    # PromQL double-quoted strings use Go's escapes, which agree with JSON's for \\ \" \n \r.
    escaped = escape_label_value(value)
    assert json.loads(f'"{escaped}"', strict=False) == value
    # Nothing in the escaped text can end the string early: every quote is escaped.
    unescaped_quotes = [
        i for i, ch in enumerate(escaped) if ch == '"' and _backslashes_before(escaped, i) % 2 == 0
    ]
    assert unescaped_quotes == []


def _backslashes_before(text: str, index: int) -> int:
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count


@pytest.mark.parametrize("name", sorted(templates.LOCAL))
def test_every_builtin_local_template_renders(name: str) -> None:
    template = templates.LOCAL[name]
    for query in (template.query, template.samples):
        if query is None:
            continue
        rendered = render(query, ALL)
        assert "{{" not in rendered
        assert 'version="4"' in rendered and "[1m]" in rendered
