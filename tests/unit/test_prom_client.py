"""PromClient against recorded Prometheus / VictoriaMetrics replies (httpx.MockTransport)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from factoryctl.errors import ConfigError, ExitStatus
from factoryctl.telemetry.auth import PromAuth
from factoryctl.telemetry.client import (
    PromClient,
    PromConfig,
    TelemetryError,
    TelemetryUnreachable,
    loopback,
    split_credentials,
)

# Recorded from Prometheus 2.42 and VictoriaMetrics 1.79 on this machine.
PROM_VECTOR = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {
                "metric": {"__name__": "factoryctl_gpu_power_watts", "node": "gpu001", "gpu": "0"},
                "value": [1767225600.123, "612.5"],
            },
            {"metric": {"node": "gpu001", "gpu": "1"}, "value": [1767225600.123, "NaN"]},
        ],
    },
}
VM_VECTOR = {
    "status": "success",
    "isPartial": False,
    "data": {
        "resultType": "vector",
        "result": [{"metric": {"node": "gpu001"}, "value": [1767225600, "3"]}],
    },
}
PROM_MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [{"metric": {"gpu": "0"}, "values": [[100, "1"], [115.5, "2"]]}],
    },
}
PROM_BAD_DATA = {
    "status": "error",
    "errorType": "bad_data",
    "error": '1:5: parse error: unexpected "}" in label matching',
}
PROM_EXECUTION = {
    "status": "error",
    "errorType": "execution",
    "error": "query processing would load too many samples into memory in query execution",
}
VM_422 = {
    "status": "error",
    "errorType": "422",
    "error": 'error when executing query="sum(up)" on the time range (start=1, end=2, step=1):'
    " cannot fetch query results from vmstorage nodes: cannot select more than"
    " -search.maxUniqueTimeseries=300000 time series",
}
VM_SERIES_LIMIT = {
    "status": "error",
    "errorType": "422",
    "error": "the number of matching timeseries exceeds 30000; either narrow down the search"
    " or increase -search.maxSeries command-line flag value",
}


def client_for(handler, **cfg) -> PromClient:
    return PromClient(
        PromConfig("http://prom.example:9090", backoff=0.0, **cfg),
        transport=httpx.MockTransport(handler),
    )


def reply(status: int, doc: object) -> httpx.Response:
    return httpx.Response(status, json=doc)


def test_instant_query_always_sends_time_and_parses_prometheus_vector() -> None:
    seen: list[dict[str, list[str]]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/api/v1/query"
        seen.append(parse_qs(req.content.decode()))
        return reply(200, PROM_VECTOR)

    res = client_for(handler).query("factoryctl_gpu_power_watts", at=1767225600.1234)
    assert seen[0]["time"] == ["1767225600.123"]
    assert seen[0]["query"] == ["factoryctl_gpu_power_watts"]
    assert res.result_type == "vector"
    assert res.vector[0].value == 612.5
    assert res.vector[0].labels["node"] == "gpu001"
    assert res.vector[1].value != res.vector[1].value  # NaN survives


@pytest.mark.parametrize(
    ("url", "identity"),
    [
        ("http://127.0.0.1:9090", True),
        ("http://127.8.0.2:8428/prometheus", True),
        ("http://localhost:9090", True),
        ("http://[::1]:9090", True),
        ("127.0.0.1:9090", True),  # no scheme: http:// is assumed
        ("http://prom.example:9090", False),
        ("https://10.0.0.5", False),
        ("http://[2001:db8::1]:9090", False),
        ("http://localhost.example.com", False),
    ],
)
def test_answers_are_not_compressed_over_loopback_only(url: str, identity: bool) -> None:
    """An engine on this machine answers plainly: gzip there costs both sides CPU and saves
    no network; anywhere else httpx's default (gzip, deflate) stays."""
    sent: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        sent.append(req.headers["accept-encoding"])
        return reply(200, VM_VECTOR)

    client = PromClient(PromConfig(url), transport=httpx.MockTransport(handler))
    client.query("x", at=1767225600)
    assert loopback(client.url) is identity
    assert (sent == ["identity"]) is identity
    assert ("gzip" in sent[0]) is not identity


def test_victoriametrics_integer_timestamps_parse() -> None:
    res = client_for(lambda r: reply(200, VM_VECTOR)).query("x", at=1767225600)
    assert res.vector[0].time == 1767225600.0
    assert isinstance(res.vector[0].time, float)


def test_range_query_parses_matrix() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        form = parse_qs(req.content.decode())
        assert form["step"] == ["15"]
        assert form["start"] == ["100.000"]
        return reply(200, PROM_MATRIX)

    res = client_for(handler).query_range("x", 100, 200, 15)
    assert res.matrix[0].points == ((100.0, 1.0), (115.5, 2.0))


def test_warnings_are_surfaced() -> None:
    doc = dict(PROM_VECTOR, warnings=["PromQL info: metric might not be a counter"])
    client = client_for(lambda r: reply(200, doc))
    res = client.query("x", 1)
    assert res.warnings == ("PromQL info: metric might not be a counter",)
    assert client.warnings == ["PromQL info: metric might not be a counter"]


@pytest.mark.parametrize(
    ("status", "doc", "needle"),
    [
        (400, PROM_BAD_DATA, "rejected the query (HTTP 400 bad_data)"),
        (422, PROM_EXECUTION, "failed to execute the query (HTTP 422 execution)"),
        (422, VM_422, "series limit"),
        (422, VM_SERIES_LIMIT, "-search.maxUniqueTimeseries"),
        (401, {"status": "error", "errorType": "unauthorized", "error": "no"}, "credentials"),
    ],
)
def test_api_errors_map_to_one_line_telemetry_error(status, doc, needle) -> None:
    with pytest.raises(TelemetryError) as err:
        client_for(lambda r: reply(status, doc)).query("sum(up)", 1)
    assert err.value.status is ExitStatus.TELEMETRY_ERROR
    assert needle in err.value.message
    assert "\n" not in err.value.message
    assert err.value.http_status == status


def test_non_json_reply_is_telemetry_error() -> None:
    html = httpx.Response(200, text="<html>Grafana</html>", headers={"content-type": "text/html"})
    with pytest.raises(TelemetryError, match="not answer /api/v1/query with Prometheus API JSON"):
        client_for(lambda r: html).query("up", 1)


def test_5xx_is_retried_then_reported() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, text="Service Unavailable")

    with pytest.raises(TelemetryError, match="HTTP 503") as err:
        client_for(handler, retries=2).query("up", 1)
    assert len(calls) == 3  # bounded: 1 + retries
    assert err.value.status is ExitStatus.TELEMETRY_ERROR


def test_transient_503_then_success() -> None:
    replies = iter([httpx.Response(503, text="busy"), reply(200, PROM_VECTOR)])
    res = client_for(lambda r: next(replies)).query("up", 1)
    assert len(res.vector) == 2


def test_connection_refused_is_unreachable_after_retries() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(TelemetryUnreachable, match="cannot reach Prometheus at") as err:
        client_for(handler, retries=1).query("up", 1)
    assert err.value.status is ExitStatus.TELEMETRY_UNREACHABLE
    assert "Connection refused" in err.value.message
    assert len(calls) == 2


def test_timeout_is_not_retried() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(TelemetryUnreachable, match="did not answer within 10s"):
        client_for(handler, retries=3).query("up", 1)
    assert len(calls) == 1


def test_series_targets_alerts_label_values() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path == "/api/v1/series":
            assert parse_qs(req.content.decode())["match[]"] == ["up", "x"]
            return reply(200, {"status": "success", "data": [{"__name__": "up", "job": "a"}]})
        if path == "/api/v1/targets":
            return reply(
                200,
                {
                    "status": "success",
                    "data": {"activeTargets": [{"health": "up", "scrapeInterval": "15s"}]},
                },
            )
        if path == "/api/v1/alerts":
            return reply(200, {"status": "success", "data": {"alerts": [{"state": "firing"}]}})
        if path == "/api/v1/label/node/values":
            return reply(200, {"status": "success", "data": ["gpu001", "gpu002"]})
        if path == "/api/v1/label/job/values":  # a proxy answering with another shape
            return reply(200, {"status": "success", "data": {"resultType": "vector"}})
        return httpx.Response(404, text="404 page not found")

    c = client_for(handler)
    assert c.series(["up", "x"]) == [{"__name__": "up", "job": "a"}]
    assert c.targets()[0]["scrapeInterval"] == "15s"
    assert c.alerts() == [{"state": "firing"}]
    assert c.label_values("node") == ["gpu001", "gpu002"]
    with pytest.raises(TelemetryError, match="values of label 'job' with dict, not a list"):
        c.label_values("job")


def test_bearer_token_from_file_is_sent_but_never_in_messages(tmp_path: Path, caplog) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get("authorization"))
        return reply(400, PROM_BAD_DATA)

    caplog.set_level(logging.DEBUG)
    client = client_for(handler, auth=PromAuth(bearer_token_file=token))
    with pytest.raises(TelemetryError) as err:
        client.query("up{", 1)
    assert seen == ["Bearer s3cr3t-token"]
    assert "s3cr3t" not in err.value.message
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(client.config)


def test_bearer_token_env_and_basic_password_env(monkeypatch) -> None:
    monkeypatch.setenv("PROM_TOKEN", "tok")
    monkeypatch.setenv("PROM_PW", "pw")
    auth = PromAuth(bearer_token_env="PROM_TOKEN")
    assert auth.headers() == {"Authorization": "Bearer tok"}
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers["authorization"])
        return reply(200, VM_VECTOR)

    client_for(handler, auth=PromAuth(username="ops", password_env="PROM_PW")).query("up", 1)
    assert seen == ["Basic b3BzOnB3"]  # ops:pw


def test_missing_secret_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token file"):
        PromAuth(bearer_token_file=tmp_path / "nope").headers()
    with pytest.raises(ConfigError, match=r"\$NO_SUCH_VAR"):
        PromAuth(bearer_token_env="NO_SUCH_VAR").headers()


def test_credentials_in_url_are_split_off_and_not_shown() -> None:
    url, creds = split_credentials("https://ops:pw@prom.example:9090/prefix")
    assert url == "https://prom.example:9090/prefix"
    assert creds == ("ops", "pw")

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.headers["authorization"].startswith("Basic ")
        return httpx.Response(500, text="boom")

    client = PromClient(
        PromConfig("http://ops:pw@prom.example:9090", retries=0),
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(TelemetryError) as err:
        client.query("up", 1)
    assert "pw" not in err.value.message.replace("prom.example", "")


def test_bad_ca_bundle_is_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a cert")
    with pytest.raises(ConfigError, match="TLS"):
        PromAuth(ca_bundle=bad).ssl_context()


def test_large_body_parses_with_gc_restored() -> None:
    import gc

    result = [
        {"metric": {"node": f"n{i // 8}", "gpu": str(i % 8)}, "value": [1, str(i)]}
        for i in range(20000)
    ]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
    res = client_for(lambda r: httpx.Response(200, content=body.encode())).query("x", 1)
    assert len(res.vector) == 20000
    assert res.vector[-1].value == 19999.0
    assert gc.isenabled()
