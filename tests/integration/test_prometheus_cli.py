"""``factoryctl --prometheus URL ...`` against the real engines, and every way it can fail."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.errors import ExitStatus
from factoryctl.lab.procs import free_port
from factoryctl.lab.stack import Stack
from factoryctl.telemetry.client import PromClient, PromConfig, TelemetryError
from tests.integration.telemetry_lab import Scenario
from tests.integration.test_prometheus_source import TOLERANCE

pytestmark = pytest.mark.integration


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def cli(*argv: str, home: Path, environ: dict[str, str] | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdout=out,
        stderr=err,
        stdin_isatty=False,
        environ={"HOME": str(home), "FACTORYCTL_SCHEDULER_TYPE": "none", **(environ or {})},
    )
    status = main(list(argv), env)
    return Result(status, out.getvalue(), err.getvalue())


def assert_one_line_error(result: Result, status: ExitStatus, needle: str) -> None:
    assert result.status == status, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("factoryctl: error: "), lines
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_nodes_gpus_jobs_same_shape_as_demo(lab, engine_url: str, tmp_path: Path) -> None:
    demo = cli("--demo", "nodes", "-o", "json", home=tmp_path).json()
    nodes = cli("--prometheus", engine_url, "nodes", "-o", "json", home=tmp_path)
    assert nodes.status == 0, nodes.stderr
    doc = nodes.json()
    assert doc["kind"] == "nodes" and doc["source"] == "prometheus:native"
    assert set(doc["items"][0]) == set(demo["items"][0])
    assert sorted(i["name"] for i in doc["items"]) == sorted(lab.sim.node_names)
    assert all(i["gpus_total"] == 4 for i in doc["items"])
    gpus = cli("--prometheus", engine_url, "gpus", "-o", "json", home=tmp_path).json()
    assert len(gpus["items"]) == 8
    table = cli("--prometheus", engine_url, "gpus", home=tmp_path)
    assert table.status == 0 and len(table.stdout.splitlines()) == 9


def test_job_and_unknown_job(lab, scenario: Scenario, engine_url: str, tmp_path: Path) -> None:
    jobs = cli("--prometheus", engine_url, "jobs", "-o", "json", home=tmp_path).json()
    assert [j["job_id"] for j in jobs["items"]] == [scenario.running]
    one = cli("--prometheus", engine_url, "job", scenario.running, home=tmp_path)
    assert one.status == 0 and "dana" in one.stdout
    missing = cli("--prometheus", engine_url, "job", "999999", home=tmp_path)
    assert_one_line_error(missing, ExitStatus.NOT_FOUND, "unknown job: 999999")


def test_jobs_on_nodes_read_the_inventory(
    lab, scenario: Scenario, engine_url: str, tmp_path: Path
) -> None:
    """``jobs --node``: the only ``jobs`` that reads the node inventory, which tells a
    node without jobs from a node the engine never saw."""
    everything = cli("--prometheus", engine_url, "jobs", "-o", "json", home=tmp_path).json()
    (running,) = everything["items"]
    held = running["nodes"]
    idle = sorted(set(lab.sim.node_names) - {held})
    assert held in lab.sim.node_names and idle, (held, lab.sim.node_names)
    on = cli("--prometheus", engine_url, "jobs", "--node", held, "-o", "json", home=tmp_path)
    assert on.status == 0, on.stderr
    assert [j["job_id"] for j in on.json()["items"]] == [scenario.running]
    off = cli("--prometheus", engine_url, "jobs", "--node", idle[0], "-o", "json", home=tmp_path)
    assert off.status == 0 and off.json()["items"] == [], off
    nosuch = cli("--prometheus", engine_url, "jobs", "--node", "nosuch9", home=tmp_path)
    assert_one_line_error(nosuch, ExitStatus.NOT_FOUND, "unknown node: nosuch9")


def test_energy_report_matches_truth(
    lab, scenario: Scenario, engine_url: str, tmp_path: Path
) -> None:
    # A duration back from now, which may be long after the scenario ended.
    since = f"{int(time.time() - lab.started + 30)}s"  # before the first job started
    res = cli("--prometheus", engine_url, "energy", "--since", since, "-o", "json", home=tmp_path)
    assert res.status == 0, res.stderr
    items = {i["job_id"]: i for i in res.json()["items"]}
    for job_id, truth in scenario.finished.items():
        measured = items[job_id]["energy_joules"]
        assert abs(measured - truth) / truth <= TOLERANCE, (job_id, measured, truth)
        assert items[job_id]["method"] == "job-counter"
    by_user = cli(
        "--prometheus",
        engine_url,
        "energy",
        "--by",
        "user",
        "--since",
        since,
        "-o",
        "json",
        home=tmp_path,
        environ={
            "FACTORYCTL_ENERGY_PRICE_PER_KWH": "0.25",
            "FACTORYCTL_ENERGY_CO2_G_PER_KWH": "300",
        },
    ).json()
    ada = next(i for i in by_user["items"] if i["user"] == "ada")
    assert ada["energy_joules"] == pytest.approx(items["501"]["energy_joules"])
    assert ada["co2_kg"] == pytest.approx(ada["energy_kwh"] * 0.3)
    assert ada["cost"] == round(ada["energy_kwh"] * 0.25, 2)


def test_future_time_range_is_usage_error(lab, engine_url: str, tmp_path: Path) -> None:
    res = cli("--prometheus", engine_url, "energy", "--since", "2099-01-01", home=tmp_path)
    assert_one_line_error(res, ExitStatus.USAGE, "in the future")
    res = cli("--prometheus", engine_url, "energy", "--until", "2099-01-01", home=tmp_path)
    assert_one_line_error(res, ExitStatus.USAGE, "in the future")


def test_bad_promql_is_telemetry_error_on_both_engines(lab, engine_url: str) -> None:
    with pytest.raises(TelemetryError) as err:
        PromClient(PromConfig(engine_url)).query("sum(", 1.0e9)
    assert err.value.status is ExitStatus.TELEMETRY_ERROR
    assert err.value.http_status in (400, 422)
    assert "\n" not in err.value.message


def test_gzip_and_plain_answers_read_the_same(
    lab, engine_url: str, request: pytest.FixtureRequest
) -> None:
    """Over loopback the client asks for plain answers (``client.loopback``); a remote
    engine gzips them. Both, from the real engine, read as the same rollup columns."""
    plain = PromClient(PromConfig(engine_url))
    zipped = PromClient(PromConfig(engine_url))
    zipped._http.headers["Accept-Encoding"] = "gzip"
    sent: dict[str, str] = {}
    for name, client in (("plain", plain), ("zipped", zipped)):
        client._http.event_hooks["response"] = [
            lambda r, name=name: sent.__setitem__(name, r.headers.get("content-encoding", ""))
        ]
    t = time.time()
    query = "last_over_time(factoryctl_node_gpus[1m])"
    got = [
        c.query_columns(query, t, ("factoryctl_node_gpus",), ("node",)).by_name
        for c in (plain, zipped)
    ]
    assert sent["plain"] == ""
    # Prometheus gzips every answer asked so; VictoriaMetrics may leave a small one plain
    # (1.112 and later do, the lab's), and then both reads were plain.
    engine = request.node.callspec.params["engine_url"]
    assert sent["zipped"] == "gzip" or (engine.startswith("victoria") and sent["zipped"] == "")
    assert got[0]["factoryctl_node_gpus"]  # the lab's nodes, each with its GPUs
    assert got[0] == got[1]


def test_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    res = cli("--prometheus", url, "nodes", home=tmp_path, environ=_fast())
    assert_one_line_error(res, ExitStatus.TELEMETRY_UNREACHABLE, "cannot reach Prometheus")


def _fast() -> dict[str, str]:
    return {"FACTORYCTL_PROMETHEUS_TIMEOUT": "0.5", "FACTORYCTL_PROMETHEUS_RETRIES": "1"}


def test_timeout_is_unreachable_and_bounded(tmp_path: Path) -> None:
    # A server that accepts connections and never answers.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        res = cli("--prometheus", url, "nodes", home=tmp_path, environ=_fast())
    assert_one_line_error(res, ExitStatus.TELEMETRY_UNREACHABLE, "did not answer within 0.5s")


class _Canned(BaseHTTPRequestHandler):
    status = 503
    body = b"upstream unavailable"
    content_type = "text/plain"

    def _reply(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "body", "ctype", "needle"),
    [
        (503, b"upstream unavailable", "text/plain", "HTTP 503"),
        (404, b"404 page not found", "text/plain", "HTTP 404"),
        (200, b"<html><body>Grafana</body></html>", "text/html", "with Prometheus API JSON"),
    ],
)
def test_http_errors_and_garbage(tmp_path: Path, status, body, ctype, needle) -> None:
    handler = type("H", (_Canned,), {"status": status, "body": body, "content_type": ctype})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        res = cli("--prometheus", url, "nodes", home=tmp_path, environ=_fast())
    finally:
        server.shutdown()
        server.server_close()
    assert_one_line_error(res, ExitStatus.TELEMETRY_ERROR, needle)


def test_non_json_from_an_exporter_url(lab, tmp_path: Path) -> None:
    url = "http://" + next(iter(lab.native.addresses.values()))
    res = cli("--prometheus", url, "nodes", home=tmp_path, environ=_fast())
    assert_one_line_error(res, ExitStatus.TELEMETRY_ERROR, "not Prometheus API JSON")


def test_undetectable_schema(tmp_path: Path) -> None:
    bare = Stack(tmp_path / "bare", [], ("prometheus",)).start()
    try:
        url = bare.running["prometheus"].url
        res = cli("--prometheus", url, "nodes", home=tmp_path)
        assert_one_line_error(res, ExitStatus.SCHEMA_UNDETECTED, "no GPU metrics found")
        forced = cli("--prometheus", url, "--schema", "dcgm", "gpus", "-o", "json", home=tmp_path)
        assert forced.status == 0 and forced.json()["items"] == []
        assert "no GPU series of the dcgm schema" in forced.stderr
    finally:
        bare.stop()


def test_real_process_prints_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "factoryctl", "--prometheus", url, "nodes"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path), "FACTORYCTL_PROMETHEUS_RETRIES": "0", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == ExitStatus.TELEMETRY_UNREACHABLE
    assert proc.stderr.count("\n") == 1 and "cannot reach Prometheus" in proc.stderr


def test_node_prints_its_processes(lab, scenario: Scenario, engine_url: str, tmp_path: Path):
    node = lab.sim.node_names[1]  # job 504 holds GPUs 2-3 here
    doc = cli("--prometheus", engine_url, "node", node, "-o", "json", home=tmp_path).json()
    assert [(p["gpu"], p["job_id"], p["user"]) for p in doc["processes"]] == [
        (2, scenario.running, "dana"),
        (3, scenario.running, "dana"),
    ]
    assert doc["processes_note"] == ""
    text = cli("--prometheus", engine_url, "node", node, home=tmp_path)
    assert text.status == 0, text.stderr
    lines = text.stdout.splitlines()
    head = lines.index(next(ln for ln in lines if ln.split()[:2] == ["GPU", "PID"]))
    assert [ln.split()[0] for ln in lines[head + 1 : head + 3]] == ["2", "3"]
    assert all("python3" in ln and "dana" in ln for ln in lines[head + 1 : head + 3])
