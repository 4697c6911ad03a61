"""The documented answer's shape, its CSV form, and the period/step rules (pure)."""

from __future__ import annotations

import csv
import io

import pytest

from gristmill_platform.errors import BadRequest
from gristmill_platform.resources.shape import (
    ALL_CUMULATE,
    CSV_HEADER,
    METRIC_NAMES,
    ResourceMetrics,
    Series,
    Totals,
    iso_ms,
    to_csv,
    to_json,
)
from gristmill_platform.resources.window import (
    MAX_POINTS,
    MAX_RANGE_MS,
    Window,
    choose_step_ms,
    parse_bool,
    parse_window,
)

T0 = 1707132918930


def sample_metrics(vram: int | None = None) -> ResourceMetrics:
    result = ResourceMetrics(totals=Totals(ram_bytes=16616214528, disk_bytes=21462233088,
                                           vram_bytes=vram))
    result.add("cpu_usage", Series(ALL_CUMULATE, [(T0, 3.0), (T0 + 30000, 4.0)]))
    result.add("cpu_usage", Series("worker-b", [(T0, 2.0), (T0 + 30000, 2.5)]))
    result.add("cpu_usage", Series("worker-a", [(T0, 1.0), (T0 + 30000, 1.5)]))
    result.add("network_input_usage", Series("worker-a", [(T0, 40546.25)]))
    return result


def test_json_is_the_documented_shape() -> None:
    body = to_json(sample_metrics())
    assert list(body) == ["metrics", "additional_data"]
    assert list(body["metrics"]) == list(METRIC_NAMES) == [
        "cpu_usage", "disk_usage", "ram_usage", "vram_usage", "gpu_usage",
        "network_input_usage", "network_output_usage"]
    # workers by name, "All cumulate" last; values as [[epoch ms, value], ...]
    assert body["metrics"]["cpu_usage"] == [
        {"metric": {"worker": "worker-a"}, "values": [[T0, 1.0], [T0 + 30000, 1.5]]},
        {"metric": {"worker": "worker-b"}, "values": [[T0, 2.0], [T0 + 30000, 2.5]]},
        {"metric": {"worker": ALL_CUMULATE}, "values": [[T0, 3.0], [T0 + 30000, 4.0]]},
    ]
    assert body["metrics"]["gpu_usage"] == [] and body["metrics"]["disk_usage"] == []
    # no GPU: no total_vram, as in the documentation's example
    assert body["additional_data"] == {"total_ram": 16616214528, "total_disk": 21462233088}


def test_total_vram_where_there_is_a_gpu() -> None:
    assert to_json(sample_metrics(vram=8 * 2**30))["additional_data"]["total_vram"] == 8 * 2**30


def test_series_without_finite_values_are_left_out() -> None:
    result = ResourceMetrics()
    result.add("ram_usage", Series("a", [(T0, float("nan")), (T0 + 1, float("inf"))]))
    result.add("ram_usage", Series("b", [(T0, float("nan")), (T0 + 1, 5.0)]))
    assert to_json(result)["metrics"]["ram_usage"] == [
        {"metric": {"worker": "b"}, "values": [[T0 + 1, 5.0]]}]
    with pytest.raises(KeyError):
        result.add("swap_usage", Series("a", [(T0, 1.0)]))


def test_csv_has_one_row_per_time_and_worker() -> None:
    text = to_csv(sample_metrics()).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == list(CSV_HEADER)
    assert [(r["timestamp_ms"], r["worker"]) for r in rows] == [
        (str(T0), "worker-a"), (str(T0), "worker-b"), (str(T0), ALL_CUMULATE),
        (str(T0 + 30000), "worker-a"), (str(T0 + 30000), "worker-b"),
        (str(T0 + 30000), ALL_CUMULATE)]
    first = rows[0]
    assert first["timestamp"] == "2024-02-05T11:35:18.930Z"
    assert float(first["cpu_usage_percent"]) == 1.0
    assert float(first["network_input_bytes_per_s"]) == 40546.25
    assert first["gpu_usage_percent"] == "" and first["ram_usage_percent"] == ""


def test_empty_csv_is_just_the_header() -> None:
    assert to_csv(ResourceMetrics()).decode().splitlines() == [",".join(CSV_HEADER)]


def test_iso_ms() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(T0) == "2024-02-05T11:35:18.930Z"


# -- period and step ----------------------------------------------------------------------


def test_two_minutes_at_a_30_s_resolution_gives_five_points_like_the_docs() -> None:
    window = Window(T0, T0 + 120_000, 30_000)
    assert window.timestamps() == [T0 + k * 30_000 for k in range(5)]
    assert window.last_ms == T0 + 120_000
    assert Window(T0, T0 + 119_999, 30_000).last_ms == T0 + 90_000


@pytest.mark.parametrize(("span_s", "min_step_s", "step_s"), [
    (120, 5, 5),            # the source's resolution rules short periods
    (120, 0.2, 1),          # never under a second
    (120, 30, 30),
    (3600, 5, 30),          # 3600/239 = 15.06 s: the next round step up
    (86400, 5, 600),
    (31 * 86400, 5, 21600),
    (60, 7, 10),            # an odd interval: the next round step above it
])
def test_step_choice(span_s: float, min_step_s: float, step_s: int) -> None:
    step = choose_step_ms(int(span_s * 1000), min_step_s)
    assert step == step_s * 1000
    assert span_s * 1000 / step + 1 <= MAX_POINTS or step_s == min_step_s


def test_step_beyond_the_round_ones() -> None:
    assert choose_step_ms(1000, 100_000.5) == 100_001_000


def test_parse_window() -> None:
    window = parse_window(str(T0), f" {T0 + 120_000} ", 30)
    assert window == Window(T0, T0 + 120_000, 30_000)


@pytest.mark.parametrize(("start", "end", "fragment"), [
    (None, "1", "Missing query parameter 'start'"),
    ("1", None, "Missing query parameter 'end'"),
    ("", "1", "Missing query parameter 'start'"),
    ("1.5", "3", "'start' must be an integer"),
    ("1", "soon", "'end' must be an integer"),
    ("-1", "3", "out of range"),
    ("1", "99999999999999999", "out of range"),
    ("5", "5", "must be before 'end'"),
    ("6", "5", "must be before 'end'"),
    ("0", str(MAX_RANGE_MS + 1), "at most 31 days"),
])
def test_parse_window_rejections(start: str | None, end: str | None, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_window(start, end, 5)
    assert fragment in caught.value.message


def test_longest_period_accepted() -> None:
    assert parse_window("0", str(MAX_RANGE_MS), 5).end_ms == MAX_RANGE_MS


@pytest.mark.parametrize(("raw", "expected"), [
    (None, False), ("", False), ("True", True), ("true", True), ("TRUE", True),
    ("False", False), ("false", False), ("1", True), ("0", False)])
def test_parse_bool(raw: str | None, expected: bool) -> None:
    assert parse_bool("download", raw) is expected


def test_parse_bool_rejects_other_words() -> None:
    with pytest.raises(BadRequest, match="must be True or False"):
        parse_bool("download", "yes")
