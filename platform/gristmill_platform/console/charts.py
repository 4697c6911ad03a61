"""Chart data for uPlot, embedded in a data-chart attribute (static/console.js draws it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime


def chart_spec(points: Sequence[tuple[datetime, float]], label: str, *,
               empty: str = "No values yet.") -> str:
    ordered = sorted(points, key=lambda p: p[0])
    return json.dumps({"x": [p[0].timestamp() for p in ordered],
                       "series": [{"label": label, "values": [p[1] for p in ordered]}],
                       "empty": empty})


def overlay_spec(series: Mapping[str, Sequence[float | None]], *, x_label: str = "step",
                 empty: str = "No values yet.") -> str:
    """Several list metrics on one chart, x being each value's position."""
    length = max((len(v) for v in series.values()), default=0)
    return json.dumps({
        "x": list(range(length)), "time": False, "xLabel": x_label, "empty": empty,
        "series": [{"label": name, "values": [*values, *([None] * (length - len(values)))]}
                   for name, values in series.items()]})
