"""Give a kept benchmark factory what a rule engine evaluating the console's rules would have
recorded, so ``console_engines.py`` measures the console with them.

    .venv/bin/python benchmarks/console_rules_backfill.py --data-dir /var/tmp/big-prom
    mkdir -p /tmp/eng145/bin && ln -sf \\
        /root/.cache/factoryctl/lab/forky/usr/bin/victoria-metrics /tmp/eng145/bin/
    PATH=/tmp/eng145/bin:$PATH .venv/bin/python \\
        benchmarks/console_rules_backfill.py --data-dir /var/tmp/big-vm145d

``--data-dir`` is a directory ``console_engines.py --data-dir`` filled (it holds
``backfill.json``: the engine and the data's time range). The engine found on PATH is
started on it (the generation that wrote the data: only its binary put first on PATH, as
above), and dashboards/prometheus/console.rules.yml is evaluated every 15 s over the
whole range by the promtool or vmalert on PATH (the host's vmalert served all three
VictoriaMetrics here), as a live rule engine would have:

* Prometheus: ``promtool tsdb create-blocks-from rules`` writes TSDB blocks, moved into
  the data directory once the engine has stopped;
* VictoriaMetrics: ``vmalert -replay.timeFrom/-replay.timeTo`` writes through the
  engine's remote-write endpoint. vmalert 1.79's replay writes ``vector(time())`` (the
  heartbeat) every 300 s only, so the heartbeat's samples every 15 s are imported too,
  as a live vmalert writes one per evaluation. The replay is checked: vmalert 1.79
  replayed a 5-minute factory with no recorded idle pair (it said only "Imported 15
  samples"; 30 minutes of the same factory worked), and the script then fails, naming it.

Backfilled series carry no stale markers: an idle pair that ended is listed up to the
5-minute lookback, which the console's poll drops as no longer held. A data directory
given the rules twice holds each recorded sample twice; fill a fresh copy instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from factoryctl.lab.procs import wait_until
from factoryctl.lab.stack import Stack
from factoryctl.telemetry.console_rules import HEARTBEAT, IDLE_PAIRS, RULES_FILE

ROOT = Path(__file__).resolve().parents[1]


def record(state: Path) -> str:
    meta = json.loads((state / "backfill.json").read_text())
    engine, start, end = meta["engine"], int(meta["start"]), int(meta["end"])
    step = int(meta["step"])  # the backfill's scrape interval: the rules are evaluated at it
    tool = "promtool" if engine == "prometheus" else "vmalert"
    if shutil.which(tool) is None:
        raise SystemExit(f"{tool} is not on PATH")
    rules = ROOT / RULES_FILE
    # Beside the data (one filesystem for the move); gone however the run ends.
    with tempfile.TemporaryDirectory(prefix="console-rules-", dir=state.parent) as tmp:
        blocks = Path(tmp)
        stack = Stack(state, [], (engine,)).start(timeout=600)
        t0 = time.perf_counter()
        try:
            url = stack.running[engine].url
            if engine == "prometheus":
                subprocess.run(
                    [tool, "tsdb", "create-blocks-from", "rules", f"--start={start}",
                     f"--end={end}", f"--url={url}", f"--eval-interval={step}s",
                     f"--output-dir={blocks}", str(rules)],
                    check=True, capture_output=True,
                )  # fmt: skip
            else:
                iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
                subprocess.run(
                    [tool, f"-rule={rules}", f"-datasource.url={url}",
                     f"-remoteWrite.url={url}", f"-replay.timeFrom={iso(start)}",
                     f"-replay.timeTo={iso(end)}", f"-evaluationInterval={step}s"],
                    check=True, capture_output=True,
                )  # fmt: skip
                stamps = list(range(start, end + 1, step))
                line = {
                    "metric": {"__name__": HEARTBEAT},
                    "values": stamps,
                    "timestamps": [t * 1000 for t in stamps],
                }
                imported = httpx.post(f"{url}/api/v1/import", content=json.dumps(line), timeout=60)
                imported.raise_for_status()
                httpx.get(f"{url}/internal/force_flush", timeout=60).raise_for_status()
                _check_replayed(url, end - 120)
            took = time.perf_counter() - t0
        finally:
            stack.stop()
        # Into the TSDB only now: Prometheus loads blocks at start.
        for block in blocks.iterdir():
            shutil.move(str(block), state / engine / block.name)
    return f"{state}: {RULES_FILE} recorded every {step} s over {end - start} s in {took:.1f} s"


def _check_replayed(url: str, at: float) -> None:
    """vmalert's replay can record nothing and say only how many samples it wrote (a
    5-minute factory, on 1.79): the idle pairs it should have recorded, counted against
    the rule's own expression at the instant the benchmark reads."""

    def count(q: str) -> float:
        got = httpx.get(f"{url}/api/v1/query", params={"query": f"count({q})", "time": at})
        rows = got.raise_for_status().json()["data"]["result"]
        return float(rows[0]["value"][1]) if rows else 0.0

    want = count("factoryctl_job_gpus - factoryctl_job_gpus_active > 0")
    if not want:
        return
    try:  # flushed series turn searchable within a second or so
        wait_until(lambda: count(IDLE_PAIRS) > 0, 10.0, IDLE_PAIRS, interval=0.5)
    except TimeoutError:
        raise SystemExit(
            f"vmalert's replay recorded no {IDLE_PAIRS}; the rollups show {want:g}"
        ) from None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="a console_engines.py data dir")
    args = p.parse_args()
    if not (args.data_dir / "backfill.json").exists():
        p.error(f"{args.data_dir} holds no backfill.json")
    print(record(args.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
