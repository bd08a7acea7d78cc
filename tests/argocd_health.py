"""manifests/argocd/health.lua run as Argo CD runs a resource health check: Lua 5.1 (Argo CD's
gopher-lua), the object as a table in the global `obj`, the script's returned table the health.
Lua comes from PyPI's `lupa` (a test dependency), whose `lua51` module embeds Lua 5.1 itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51

SCRIPT = Path(__file__).resolve().parents[1] / "manifests" / "argocd" / "health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of the ModelRollout `obj` (a dict as read from the API server)."""
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _table(lua, obj)
    result = lua.execute(SCRIPT.read_text(encoding="utf-8"))
    return result["status"], result["message"] or ""


def _table(lua: lupa.lua51.LuaRuntime, value: Any) -> Any:
    """JSON-shaped Python as Lua values: objects and arrays as tables (arrays 1-based), null as nil."""
    if isinstance(value, dict):
        return lua.table_from({k: _table(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([_table(lua, v) for v in value])
    return value
