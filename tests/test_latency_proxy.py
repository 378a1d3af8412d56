"""bench/latency_proxy.py: a round trip through the proxy takes at least its RTT, and the S3 API
(s3fs, and a delta-rs commit) works through it, with its requests counted."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlparse

import pytest

from bench.latency_proxy import LatencyProxy

RTT = 0.05

pytestmark = pytest.mark.s3


def _port(endpoint: str) -> int:
    return urlparse(endpoint).port


def _round_trip(port: int, path: str = "/") -> float:
    """Seconds of one GET on a connection already open (no connect in the timing)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
        t0 = time.perf_counter()
        conn.request("GET", path)
        conn.getresponse().read()
        return time.perf_counter() - t0
    finally:
        conn.close()


def test_a_round_trip_takes_at_least_the_rtt(s3_endpoint):
    direct = _round_trip(_port(s3_endpoint))
    with LatencyProxy(_port(s3_endpoint), rtt_s=RTT) as proxy:
        assert proxy.endpoint.startswith("http://127.0.0.1:") and proxy.port != _port(s3_endpoint)
        through = min(_round_trip(proxy.port) for _ in range(3))
        assert proxy.requests["GET"] == 6 and proxy.connections >= 3
    assert through >= RTT
    assert through < RTT + direct + 0.2  # held once each way, not per byte or per chunk twice


def test_s3fs_and_a_delta_commit_work_through_the_proxy(s3_endpoint, tmp_path):
    import pyarrow as pa
    import s3fs
    from deltalake import DeltaTable, write_deltalake

    with LatencyProxy(_port(s3_endpoint), rtt_s=0.02) as proxy:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.endpoint})
        fs.mkdir("latency")
        fs.pipe_file("latency/a.bin", b"x" * 300_000)  # a body larger than one read of the proxy
        assert fs.cat_file("latency/a.bin") == b"x" * 300_000
        assert fs.ls("latency", detail=False) == ["latency/a.bin"]
        options = {
            "AWS_ENDPOINT_URL": proxy.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "aws_conditional_put": "etag",
        }
        before = proxy.total_requests()
        t0 = time.perf_counter()
        write_deltalake("s3://latency/table", pa.table({"x": [1, 2, 3]}), storage_options=options)
        commit_s = time.perf_counter() - t0
        write_deltalake("s3://latency/table", pa.table({"x": [4]}), mode="append", storage_options=options)
        requests = proxy.total_requests() - before
        assert proxy.requests["PUT"] >= 3 and proxy.requests["GET"] >= 2
        assert sorted(
            DeltaTable("s3://latency/table", storage_options=options).to_pyarrow_table()["x"].to_pylist()
        ) == [1, 2, 3, 4]
    assert requests >= 4
    assert commit_s >= 2 * 0.02  # a commit is at least a write and a log entry: two round trips
