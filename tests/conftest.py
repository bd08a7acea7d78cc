"""Shared fixtures live in tests/fixtures/ as plugins so each real service has one owner."""

pytest_plugins = [
    "tests.fixtures.mlflow",
    "tests.fixtures.prometheus",
    "tests.fixtures.local",
    "tests.fixtures.kube",
    "tests.fixtures.kserve_stack",
    "tests.fixtures.faults",
]
