"""PromQL building and the conversion of Prometheus' answers (pure, no server)."""

from __future__ import annotations

import pytest

from gristmill_platform.resources.prometheus import (
    PrometheusUnavailable,
    assemble,
    data_of,
    duration,
    metric_queries,
    on_gpu_node,
    on_node,
    pod_usage_queries,
    rate_window_s,
    scalar_from_vector,
    series_from_matrix,
)
from gristmill_platform.resources.shape import ALL_CUMULATE, METRIC_NAMES, Series, to_json


def test_durations_and_rate_windows() -> None:
    assert duration(60) == "60000ms"
    assert duration(0.0001) == "1ms"
    # at least four scrapes, at least one step
    assert rate_window_s(step_s=5, scrape_interval_s=30) == 120
    assert rate_window_s(step_s=600, scrape_interval_s=30) == 600


def test_every_metric_has_a_per_worker_and_a_cumulate_query() -> None:
    queries = metric_queries("60000ms")
    assert set(queries) == set(METRIC_NAMES)
    for name, (per_worker, cumulate) in queries.items():
        assert "by (nodename)" in per_worker, name
        assert "nodename" not in cumulate, name


def test_node_exporter_queries() -> None:
    queries = metric_queries("2m")
    cpu, cpu_all = queries["cpu_usage"]
    assert cpu == (
        '100 * (1 - sum by (nodename) ((rate(node_cpu_seconds_total{mode=~"idle|iowait"}[2m]))'
        " * on(instance) group_left(nodename) max by (instance, nodename) (node_uname_info))"
        ' / count by (nodename) ((node_cpu_seconds_total{mode="idle"}) * on(instance)'
        " group_left(nodename) max by (instance, nodename) (node_uname_info)))")
    assert cpu_all == ('100 * (1 - sum(rate(node_cpu_seconds_total{mode=~"idle|iowait"}[2m]))'
                       ' / count(node_cpu_seconds_total{mode="idle"}))')
    ram, ram_all = queries["ram_usage"]
    assert "node_memory_MemAvailable_bytes" in ram and "node_memory_MemTotal_bytes" in ram
    assert ram_all == ("100 * (1 - sum(node_memory_MemAvailable_bytes)"
                       " / sum(node_memory_MemTotal_bytes))")
    disk, _ = queries["disk_usage"]
    assert 'node_filesystem_avail_bytes{mountpoint="/",fstype!="rootfs"}' in disk
    received, received_all = queries["network_input_usage"]
    assert received_all.startswith('sum(rate(node_network_receive_bytes_total{device!~"(lo|')
    assert "veth.*" in received and "[2m]" in received
    assert "node_network_transmit_bytes_total" in queries["network_output_usage"][0]


def test_dcgm_queries_name_workers_after_hostname() -> None:
    queries = metric_queries("2m")
    gpu, gpu_all = queries["gpu_usage"]
    assert gpu == ('avg by (nodename) (label_replace(DCGM_FI_DEV_GPU_UTIL, "nodename", "$1",'
                   ' "Hostname", "(.+)"))')
    assert gpu_all == "avg(DCGM_FI_DEV_GPU_UTIL)"
    vram, vram_all = queries["vram_usage"]
    assert "DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE" in vram
    assert vram_all == ("100 * sum(DCGM_FI_DEV_FB_USED)"
                        " / sum((DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE))")


def test_join_helpers() -> None:
    assert on_node("x") == ("(x) * on(instance) group_left(nodename) "
                            "max by (instance, nodename) (node_uname_info)")
    assert on_gpu_node("y") == 'label_replace(y, "nodename", "$1", "Hostname", "(.+)")'


def test_pod_usage_queries_quote_label_values() -> None:
    queries = pod_usage_queries('work"ers', "run-1\\x", lookback_s=90, resolution_s=15)
    selector = 'namespace="work\\"ers",pod="run-1\\\\x"'
    assert queries["cpu_time_s"] == (
        "sum(max_over_time(container_cpu_usage_seconds_total"
        f'{{{selector},container!="",container!="POD"}}[90000ms]))')
    assert queries["peak_memory_bytes"] == (
        "max_over_time(sum(container_memory_working_set_bytes"
        f'{{{selector},container!="",container!="POD"}})[90000ms:15000ms])')
    assert queries["gpu_memory_bytes"] == (
        f"max_over_time(sum(DCGM_FI_DEV_FB_USED{{{selector}}})[90000ms:15000ms]) * 1048576")


MATRIX = [
    {"metric": {"nodename": "ip-10-0-1-5"}, "values": [[1707132918.93, "12.5"],
                                                      [1707132948.93, "NaN"],
                                                      [1707132978.93, "13"]]},
    {"metric": {"instance": "10.0.1.6:9100"}, "values": [[1707132918.93, "1e3"]]},
    {"metric": {"nodename": "empty"}, "values": [[1707132918.93, "+Inf"]]},
]


def test_matrix_to_series() -> None:
    assert series_from_matrix(MATRIX) == [
        Series("ip-10-0-1-5", [(1707132918930, 12.5), (1707132978930, 13.0)]),
        Series("10.0.1.6:9100", [(1707132918930, 1000.0)]),
    ]
    cumulate = series_from_matrix([{"metric": {}, "values": [[1707132918.93, "3"]]}],
                                  worker=ALL_CUMULATE)
    assert cumulate == [Series(ALL_CUMULATE, [(1707132918930, 3.0)])]


def test_vector_to_scalar() -> None:
    assert scalar_from_vector([{"metric": {}, "value": [1707132918.93, "16616214528"]}]) == \
        16616214528.0
    assert scalar_from_vector([]) is None
    assert scalar_from_vector([{"metric": {}, "value": [1, "NaN"]}]) is None


def test_data_of() -> None:
    assert data_of({"status": "success", "data": {"resultType": "matrix", "result": MATRIX}},
                   "q") == MATRIX
    with pytest.raises(PrometheusUnavailable) as caught:
        data_of({"status": "error", "errorType": "bad_data", "error": "parse error"}, "up{")
    assert caught.value.status_code == 502
    assert "bad_data: parse error" in caught.value.message
    assert caught.value.additional_data == {"query": "up{"}
    with pytest.raises(PrometheusUnavailable, match="not its API"):
        data_of(["nope"], "q")


def test_assemble() -> None:
    series = series_from_matrix(MATRIX[:1])
    cumulate = [Series(ALL_CUMULATE, [(1707132918930, 12.5)])]
    result = assemble({"cpu_usage": (series, cumulate)},
                      {"ram": 2.0**34, "disk": 1e11, "vram": None})
    body = to_json(result)
    assert [s["metric"]["worker"] for s in body["metrics"]["cpu_usage"]] == [
        "ip-10-0-1-5", ALL_CUMULATE]
    assert body["metrics"]["gpu_usage"] == []
    assert body["additional_data"] == {"total_ram": 2**34, "total_disk": 10**11}
    with_gpu = assemble({}, {"ram": None, "disk": None, "vram": 8589934592.0})
    assert to_json(with_gpu)["additional_data"] == {"total_ram": 0, "total_disk": 0,
                                                    "total_vram": 8589934592}
