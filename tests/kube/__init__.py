"""A Kubernetes API server for tests (kmock-based) and what runs it: see emulator.py and server.py."""

from tests.kube.emulator import ApiServerEmulator
from tests.kube.server import (
    EmulatorError,
    EmulatorServer,
    load_documents,
    write_kubeconfig,
)

__all__ = ["ApiServerEmulator", "EmulatorError", "EmulatorServer", "load_documents", "write_kubeconfig"]
