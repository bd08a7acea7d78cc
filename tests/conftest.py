"""Shared fixtures live in tests/fixtures/ as plugins so each real service has one owner."""

pytest_plugins = [
    "tests.fixtures.mlflow",
    "tests.fixtures.prometheus",
    "tests.fixtures.local",
    "tests.fixtures.kube",
    "tests.fixtures.kserve_stack",
    "tests.fixtures.faults",
]


# Slowest first: `make test` hands whole files to two workers in this order (--dist loadfile
# --no-loadscope-reorder), so the few long end-to-end and reliability files start at once and the
# many short unit files fill the gaps at the end, instead of a long file starting last.
_DIRECTORY_ORDER = ("e2e", "reliability", "integration", "kube", "unit")


def pytest_collection_modifyitems(items: list) -> None:
    def rank(item) -> int:
        parts = item.nodeid.split("/")
        return _DIRECTORY_ORDER.index(parts[1]) if len(parts) > 2 and parts[1] in _DIRECTORY_ORDER else len(_DIRECTORY_ORDER)

    items.sort(key=rank)  # stable: the order within a directory is kept
