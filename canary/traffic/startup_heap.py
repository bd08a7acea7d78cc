"""What the router and the comparator do with their heap once they are ready to serve.

Both keep long-lived state that grows with traffic (the feedback memory holds up to 50,000
requests' predictions, the comparator's pending halves up to 10,000), so CPython's full
collections come often while it grows and each walks every object: at startup that is already
a few hundred thousand (FastAPI, pydantic, prometheus_client, numpy). Measured with
benchmarks/comparator_capacity.py at 2000 logger pairs/s, those pauses put the comparator's answer
p99 at 48 ms; with the startup objects frozen out of the collector, 4 ms. The startup objects live
as long as the process does, so the collector has nothing to find among them.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now out of the collector's generations."""
    gc.collect()
    gc.freeze()
