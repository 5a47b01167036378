"""What our recording and alerting rules cost Prometheus per evaluation, at factory scale.

    .venv/bin/python benchmarks/rules_eval.py [--gpus 8192] [--seconds 60] [--runs 5]

Serves a synthetic factory (8 GPUs per node, an 8-GPU job on 7 of 8 nodes, rank 0 of each
job idle) in the native schema; the real Prometheus scrapes it and evaluates
dashboards/prometheus/*.rules.yml every 15 s (so recorded inputs exist). Then every rule's
expression runs as an instant query through the HTTP API (median of --runs). Baseline in
the same run: ``sum(factoryctl_gpu_power_watts)``, one pass over one per-GPU metric. Also
times one per-GPU alert joined inline on job info versus on the recorded attribution.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from factoryctl.lab.procs import ManagedProcess, free_port, wait_until

RULES = Path(__file__).resolve().parents[1] / "dashboards" / "prometheus"


def exposition(gpus: int, elapsed: float) -> bytes:
    lines = []
    for n in range(gpus // 8):
        node = f"gpu{n:05d}"
        job = str(100000 + n) if n % 8 else ""
        lines.append(f'factoryctl_node_partition_info{{node="{node}",partition="gpu"}} 1')
        lines.append(f'factoryctl_node_gpus_expected{{node="{node}"}} 8')
        lines.append(f'factoryctl_node_state_info{{node="{node}",state="mixed",reason=""}} 1')
        for g in range(8):
            ids = f'node="{node}",gpu="{g}",uuid="GPU-{n:05d}-{g}"'
            util = 0.9 if job and g else 0.01
            power = 100 + 600 * util
            lines += [
                f'factoryctl_gpu_info{{{ids},model="H100"}} 1',
                f"factoryctl_gpu_up{{{ids}}} 1",
                f"factoryctl_gpu_utilization_ratio{{{ids}}} {util}",
                f"factoryctl_gpu_power_watts{{{ids}}} {power}",
                f"factoryctl_gpu_memory_used_bytes{{{ids}}} 6e10",
                f"factoryctl_gpu_energy_joules_total{{{ids}}} {1e9 + power * elapsed}",
            ]
            if job:
                lines.append(f'factoryctl_gpu_job_info{{{ids},job_id="{job}",user="u{n % 97}"}} 1')
        if job:
            ids = f'node="{node}",job_id="{job}"'
            lines += [
                f"factoryctl_job_energy_joules_total{{{ids}}} {4000 * elapsed}",
                f"factoryctl_job_gpu_seconds_total{{{ids}}} {8 * elapsed}",
                f"factoryctl_job_active_gpu_seconds_total{{{ids}}} {7 * elapsed}",
            ]
    return ("\n".join(lines) + "\n").encode()


def rule_files(tmp: Path) -> list[str]:
    out = []
    for src in sorted(RULES.glob("*.rules.yml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            group.pop("interval", None)  # every group at the global 15 s, to measure them all
        (tmp / src.name).write_text(yaml.safe_dump(doc))
        out.append(str(tmp / src.name))
    return out


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return json.load(resp)


def query_cost(url: str, expr: str, runs: int) -> tuple[float, int]:
    """Median engine time (stats evalTotalTime, no HTTP or JSON) and samples touched."""
    qs = urllib.parse.urlencode({"query": expr, "stats": "all"})
    times, samples = [], 0
    for _ in range(runs):
        reply = get(f"{url}/api/v1/query?{qs}")
        assert reply["status"] == "success", (expr, reply)
        stats = reply["data"]["stats"]
        times.append(stats["timings"]["evalTotalTime"])
        samples = stats["samples"]["totalQueryableSamples"]
    return statistics.median(times), samples


INLINE_JOIN = "topk by (node, gpu) (1, last_over_time(factoryctl_gpu_job_info[2m]))"
RECORDED_JOIN = "gpu:factoryctl_gpu_job_info:topk1"
# One per-GPU alert, joined both ways: what recording the join once saves each alert.
JOINED = (
    "(factoryctl_gpu_up == 0) * on (node, gpu) group_left (job_id, user) {join}"
    " or (factoryctl_gpu_up == 0) unless on (node, gpu) {join}"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=8192)
    parser.add_argument("--seconds", type=float, default=60.0, help="warm-up before measuring")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(args.gpus, time.monotonic() - started)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rules = [
        (r.get("record") or r["alert"], r["expr"])
        for src in sorted(RULES.glob("*.rules.yml"))
        for g in yaml.safe_load(src.read_text())["groups"]
        for r in g["rules"]
    ]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        config = {
            "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
            "rule_files": rule_files(tmp),
            "scrape_configs": [
                {
                    "job_name": "factoryctl-exporter",
                    "honor_labels": True,
                    "scrape_timeout": "14s",
                    "static_configs": [{"targets": [f"127.0.0.1:{server.server_address[1]}"]}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))
        port = free_port()
        prom = ManagedProcess(
            "prometheus",
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            tmp / "prometheus.log",
        ).start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: get(f"{url}/api/v1/status/buildinfo") is not None, 60, "prometheus")
            time.sleep(args.seconds)
            head = get(f"{url}/api/v1/status/tsdb")["data"]["headStats"]["numSeries"]
            base, base_samples = query_cost(url, "sum(factoryctl_gpu_power_watts)", args.runs)
            per_rule = {name: query_cost(url, expr, args.runs) for name, expr in rules}
            inline = query_cost(url, JOINED.format(join=INLINE_JOIN), args.runs)
            recorded = query_cost(url, JOINED.format(join=RECORDED_JOIN), args.runs)
        finally:
            prom.stop()
            server.shutdown()

    total = sum(t for t, _ in per_rule.values())
    total_samples = sum(n for _, n in per_rule.values())
    ms = 1000
    print(f"GPUs {args.gpus}, head series {head}, engine time = median of {args.runs} queries")
    print(f"baseline sum(factoryctl_gpu_power_watts): {base * ms:.1f} ms, {base_samples} samples")
    print(
        f"all {len(rules)} rules, one evaluation: {total * ms:.0f} ms ({total / base:.1f}x), "
        f"{total_samples} samples ({total_samples / base_samples:.1f}x); "
        f"{100 * total / 15:.1f}% of a 15 s interval"
    )
    print("most expensive (ms, x baseline time, samples):")
    for name, (t, n) in sorted(per_rule.items(), key=lambda kv: -kv[1][0])[:6]:
        print(f"  {name}: {t * ms:.1f} ms ({t / base:.1f}x), {n}")
    print(
        f"per-GPU alert joined inline on job info: {inline[0] * ms:.1f} ms, {inline[1]} samples;"
        f" on the recorded attribution: {recorded[0] * ms:.1f} ms, {recorded[1]} samples"
        f" ({inline[0] / recorded[0]:.1f}x, {inline[1] / max(recorded[1], 1):.1f}x)"
    )


if __name__ == "__main__":
    main()
