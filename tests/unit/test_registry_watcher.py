"""Snapshot reading and move detection, on snapshots built by hand (no server needed)."""

from __future__ import annotations

import pytest

from registry.watcher import (
    FILTER_BUDGET_CHARS,
    MAX_FILTERED_SEARCHES,
    AliasMoved,
    ModelState,
    RegistryWatcher,
    Snapshot,
    WatchedModel,
    name_filters,
)


def snap(**models: ModelState) -> Snapshot:
    return Snapshot(dict(models))


def with_aliases(**aliases: str) -> ModelState:
    return ModelState(exists=True, aliases=aliases)


def watcher(*watched: WatchedModel) -> RegistryWatcher:
    return RegistryWatcher(client=None, watched=list(watched))  # type: ignore[arg-type]


def test_candidate_and_stable_follow_the_configured_aliases() -> None:
    state = snap(iris=with_aliases(challenger="3", champion="2", canary="4"))
    assert state.candidate(WatchedModel("iris")) == "3"
    assert state.stable(WatchedModel("iris")) == "2"
    assert state.candidate(WatchedModel("iris", candidate_alias="canary")) == "4"
    assert state.candidate(WatchedModel("absent")) is None
    assert len(state) == 1 and list(state) == ["iris"]


def test_candidate_stage_overrides_the_alias_and_ignores_case() -> None:
    state = snap(iris=ModelState(True, {"challenger": "9", "champion": "3"}, {"Staging": "5", "Production": "4"}))
    watched = WatchedModel("iris", candidate_stage="staging")
    assert state.candidate(watched) == "5"
    assert state.stable(watched) == "3"  # the stable alias, whatever stage holds
    assert state.candidate(WatchedModel("iris", candidate_stage="Archived")) is None


def test_changes_report_moves_sets_and_removals_of_the_candidate_only() -> None:
    iris, wine = WatchedModel("iris"), WatchedModel("wine")
    w = watcher(iris, wine)
    before = snap(iris=with_aliases(challenger="1", champion="1"), wine=with_aliases(challenger="2"))
    after = snap(iris=with_aliases(challenger="2", champion="2"), wine=ModelState(exists=False))
    assert w.changes(before, after) == [
        AliasMoved("iris", "challenger", "1", "2"),
        AliasMoved("wine", "challenger", "2", None),
    ]
    assert w.changes(after, after) == []


def test_first_poll_counts_as_nothing_set() -> None:
    w = watcher(WatchedModel("iris"), WatchedModel("wine"))
    current = snap(iris=with_aliases(challenger="7"), wine=with_aliases(champion="1"))
    assert w.changes(None, current) == [AliasMoved("iris", "challenger", None, "7")]


def test_stage_moves_are_marked_as_such() -> None:
    w = watcher(WatchedModel("iris", candidate_stage="Staging"))
    before = snap(iris=ModelState(True, {}, {"Staging": "1"}))
    after = snap(iris=ModelState(True, {}, {"Staging": "2"}))
    assert w.changes(before, after) == [AliasMoved("iris", "Staging", "1", "2", via="stage")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name must not be empty"),
        ({"name": "  "}, "name must not be empty"),
        ({"name": "iris", "candidate_alias": "latest"}, "candidate_alias 'latest' is reserved"),
        ({"name": "iris", "stable_alias": "V2"}, "stable_alias 'V2' is reserved"),
        ({"name": "iris", "candidate_alias": "has space"}, "not a valid MLflow alias"),
        ({"name": "iris", "candidate_alias": ""}, "not a valid MLflow alias"),
        ({"name": "iris", "candidate_alias": "x" * 256}, "not a valid MLflow alias"),
        ({"name": "iris", "candidate_alias": "same", "stable_alias": "same"}, "two different aliases"),
        ({"name": "iris", "candidate_stage": "None"}, "candidate_stage 'None' is not a stage"),
        ({"name": "iris", "candidate_stage": " "}, "candidate_stage ' ' is not a stage"),
    ],
)
def test_watched_model_rejects_bad_settings(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WatchedModel(**kwargs)


def test_watcher_rejects_bad_page_sizes_and_duplicate_models() -> None:
    for size in (0, -1, 1001):
        with pytest.raises(ValueError, match=f"page_size must be between 1 and 1000, got {size}"):
            RegistryWatcher(None, [], page_size=size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="models watched more than once: iris"):
        watcher(WatchedModel("iris"), WatchedModel("wine"), WatchedModel("iris", "other"))


def test_watched_names_are_read_with_name_in_filters_within_the_budget() -> None:
    assert name_filters(["a", "b-2", "c d"]) == ["name IN ('a', 'b-2', 'c d')"]
    names = [f"model-{i:04d}-{'x' * 40}" for i in range(60)]
    filters = name_filters(names)
    assert filters is not None and 1 < len(filters) <= MAX_FILTERED_SEARCHES
    assert all(len(f) <= FILTER_BUDGET_CHARS for f in filters)
    # Every name in exactly one filter, in order.
    assert ", ".join(f.removeprefix("name IN (").removesuffix(")") for f in filters) == ", ".join(
        f"'{n}'" for n in names
    )


@pytest.mark.parametrize(
    "names",
    [
        [],
        ["it's"],
        ["back\\slash"],
        ["tab\there"],
        [f"model-{i:04d}-{'x' * 60}" for i in range(200)],  # more searches than one listing
    ],
    ids=["none", "quote", "backslash", "control-character", "too-many"],
)
def test_names_a_filter_cannot_carry_exactly_or_cheaply_list_the_registry(names: list[str]) -> None:
    assert name_filters(names) is None
