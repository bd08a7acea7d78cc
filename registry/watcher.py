"""The promotion watcher: polls the MLflow registry and reports candidate moves.

A promotion in MLflow is an alias moving (`challenger` -> version 7), or, in the legacy workflow,
a version entering a stage. Aliases carry no timestamp and moving one does not touch the model's
`last_updated_timestamp`, so the only reliable way to see a move is to read every watched model's
aliases and compare with the previous read. `search_registered_models` returns aliases and the
latest version per stage for up to 1000 models per call (about 0.1 s for 300 models, against
7 ms per model for per-alias lookups). When the watched models' names fit in a few filtered
searches (`name IN (...)`), only those models are read: 10 watched of 1000 registered cost about
50 ms against 0.8 s for the whole listing (benchmarks/registry_poll.py). Otherwise one poll costs
one request per 1000 registered models, however many models are watched.

Webhooks (MLflow >= 3.3) are only a hint to poll early: they are not persisted, not ordered, and
not sent for stage transitions. The snapshot comparison here stays the source of truth.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import mlflow

from registry.errors import translated
from registry.names import check_alias

MAX_PAGE_SIZE = 1000  # MLflow's upper bound for search_registered_models(max_results=...)
# A search's filter travels in the request's query string, and MLflow's server may run behind a
# server that limits the request line to 4 KiB (gunicorn's default): filters stay well below it.
FILTER_BUDGET_CHARS = 2000
# Past this many filtered searches the full listing is as cheap (it is one request per 1000 models).
MAX_FILTERED_SEARCHES = 3
# Names MLflow's filter parser reads back exactly inside single quotes (it uses ast.literal_eval).
_FILTERABLE_NAME = re.compile(r"^[^'\\\x00-\x1f]+$")


@dataclass(frozen=True)
class WatchedModel:
    """A registered model whose candidate pointer starts rollouts.

    The candidate is the version under `candidate_alias`, or, when `candidate_stage` is set
    (legacy stage workflow), the latest version in that stage. The stable version is always the one
    under `stable_alias`: promotion moves that alias, so it is the one pointer that stays true.
    """

    name: str
    candidate_alias: str = "challenger"
    stable_alias: str = "champion"
    candidate_stage: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("watched model name must not be empty")
        check_alias(self.candidate_alias, "candidate_alias")
        check_alias(self.stable_alias, "stable_alias")
        if self.candidate_alias == self.stable_alias:
            raise ValueError(
                f"model {self.name!r}: candidate_alias and stable_alias are both "
                f"{self.candidate_alias!r}; a rollout needs two different aliases"
            )
        stage = self.candidate_stage
        if stage is not None and (not stage.strip() or stage.lower() == "none"):
            raise ValueError(f"model {self.name!r}: candidate_stage {stage!r} is not a stage")


@dataclass(frozen=True)
class ModelState:
    """What the registry says about one model at poll time; versions are `str`."""

    exists: bool
    aliases: dict[str, str] = field(default_factory=dict)
    stage_versions: dict[str, str] = field(default_factory=dict)

    def in_stage(self, stage: str) -> str | None:
        """The latest version in `stage`; MLflow capitalises stage names, so match any case."""
        wanted = stage.lower()
        return next((v for s, v in self.stage_versions.items() if s.lower() == wanted), None)


MISSING = ModelState(exists=False)


@dataclass(frozen=True)
class Snapshot(Mapping[str, ModelState]):
    """Model name -> ModelState for every watched model (missing ones have `exists=False`)."""

    models: dict[str, ModelState]

    def __getitem__(self, name: str) -> ModelState:
        return self.models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def candidate(self, watched: WatchedModel) -> str | None:
        state = self.models.get(watched.name, MISSING)
        if watched.candidate_stage is not None:
            return state.in_stage(watched.candidate_stage)
        return state.aliases.get(watched.candidate_alias)

    def stable(self, watched: WatchedModel) -> str | None:
        return self.models.get(watched.name, MISSING).aliases.get(watched.stable_alias)


@dataclass(frozen=True)
class AliasMoved:
    """The candidate pointer of `model` moved: the registry's promotion event.

    `alias` is the alias name, or the stage name when `via == "stage"`. `new_version` None means
    the pointer was removed (alias deleted, version deleted or moved out of the stage, model
    deleted); `old_version` None means it was just set.
    """

    model: str
    alias: str
    old_version: str | None
    new_version: str | None
    via: Literal["alias", "stage"] = "alias"


class RegistryWatcher:
    """Reads the watched models' aliases and stages in as few requests as the registry allows."""

    def __init__(
        self,
        client: mlflow.MlflowClient,
        watched: list[WatchedModel],
        page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        # Counted once, not names.count per name: a poll builds a watcher for every rollout's model.
        duplicates = sorted(n for n, times in Counter(w.name for w in watched).items() if times > 1)
        if duplicates:
            raise ValueError(f"models watched more than once: {', '.join(duplicates)}")
        self.client = client
        self.watched = list(watched)
        self.page_size = page_size

    def poll(self) -> Snapshot:
        """One read of the registry; RegistryUnavailable when MLflow cannot be reached."""
        wanted = {w.name for w in self.watched}
        found: dict[str, ModelState] = {}
        filters = name_filters(sorted(wanted))
        with translated(self.client):
            for filter_string in filters if filters is not None else [None]:
                token: str | None = None
                while True:
                    page = self.client.search_registered_models(
                        filter_string=filter_string, max_results=self.page_size, page_token=token
                    )
                    for model in page:
                        if model.name in wanted:
                            found[model.name] = _state_of(model)
                    token = page.token
                    if not token:
                        break
        return Snapshot({name: found.get(name, MISSING) for name in sorted(wanted)})

    def changes(self, previous: Snapshot | None, current: Snapshot) -> list[AliasMoved]:
        """Candidate moves between two polls, in the order the models are watched.

        `previous=None` (the first poll) counts as "nothing set", so a candidate set before the
        controller started is reported as a move from None and is not missed.
        """
        moves = []
        for watched in self.watched:
            old = previous.candidate(watched) if previous is not None else None
            new = current.candidate(watched)
            if old != new:
                stage = watched.candidate_stage
                moves.append(
                    AliasMoved(
                        model=watched.name,
                        alias=stage if stage is not None else watched.candidate_alias,
                        old_version=old,
                        new_version=new,
                        via="stage" if stage is not None else "alias",
                    )
                )
        return moves


def name_filters(names: list[str]) -> list[str] | None:
    """`name IN (...)` filters covering `names`, or None when listing the registry is cheaper.

    None too when a name could not be quoted exactly (a quote or a backslash in it): reading every
    model is slower but never misses one.
    """
    if not names or not all(_FILTERABLE_NAME.match(name) for name in names):
        return None
    filters: list[str] = []
    batch: list[str] = []
    for quoted in (f"'{name}'" for name in names):
        if batch and len("name IN ()") + len(", ".join([*batch, quoted])) > FILTER_BUDGET_CHARS:
            filters.append(f"name IN ({', '.join(batch)})")
            batch = []
        batch.append(quoted)
    filters.append(f"name IN ({', '.join(batch)})")
    return filters if len(filters) <= MAX_FILTERED_SEARCHES else None


def _state_of(model: mlflow.entities.model_registry.RegisteredModel) -> ModelState:
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    stages = {
        mv.current_stage: str(mv.version)
        for mv in (model.latest_versions or [])
        if mv.current_stage and mv.current_stage != "None"
    }
    return ModelState(exists=True, aliases=aliases, stage_versions=stages)
