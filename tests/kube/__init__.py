"""A Kubernetes API server for tests (kmock-based) and what runs it: see emulator.py and server.py."""

from tests.kube.emulator import ApiServerEmulator
from tests.kube.server import (
    KSERVE_CRD,
    EmulatorError,
    EmulatorServer,
    load_documents,
    write_kubeconfig,
)

__all__ = ["KSERVE_CRD", "ApiServerEmulator", "EmulatorError", "EmulatorServer", "load_documents", "write_kubeconfig"]
