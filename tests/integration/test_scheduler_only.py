"""factoryctl on a real Slurm with no Prometheus: nodes, node, jobs and job from the
scheduler alone (issue 11, part 6), on every Slurm generation the lab can run here.

The real ``factoryctl`` runs as a subprocess with the cluster's environment (its release's
clients first on PATH), HOME in a temporary directory and no Prometheus URL: states and
allocations must be Slurm's own (read back with ``scontrol``), every telemetry field null,
the exit status 0 and one notice on stderr.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from factoryctl.hostlists import expand
from factoryctl.lab.slurm import SlurmCluster

NODE_TELEMETRY = ("utilization", "power_watts", "temperature_max_celsius", "xid_total")
JOB_TELEMETRY = ("mean_utilization", "low_utilization", "min_utilization", "idle_gpus",
                 "idle_seconds", "power_watts", "energy_joules", "energy_kwh")  # fmt: skip
# ``slurm`` (tests/integration/conftest.py): a 4-node cluster of each Slurm generation,
# reset between tests.


def factoryctl(
    cluster: SlurmCluster, home: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in cluster.env.items()
        if not k.startswith("FACTORYCTL_") or k == "FACTORYCTL_LAB_DIR"
    }
    environ.pop("XDG_CONFIG_HOME", None)  # no config but the defaults: no Prometheus URL
    environ["HOME"] = str(home)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "factoryctl", "--scheduler", "slurm", *argv],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_json(cluster: SlurmCluster, home: Path, *argv: str) -> dict[str, Any]:
    res = factoryctl(cluster, home, *argv, "-o", "json")
    assert res.returncode == 0, res.stderr
    notice = res.stderr.splitlines()
    assert len(notice) == 1, res.stderr
    assert notice[0].startswith("factoryctl: warning: no GPU telemetry: no Prometheus URL")
    doc: dict[str, Any] = json.loads(res.stdout)
    assert set(NODE_TELEMETRY + JOB_TELEMETRY) <= set(doc["unavailable"])
    return doc


def scontrol(cluster: SlurmCluster, what: str, name: str) -> dict[str, str]:
    out = cluster.scontrol("-d", "-o", "show", what, name, check=True).stdout
    return dict(t.partition("=")[::2] for t in out.split() if "=" in t)


def gres_count(text: str) -> int:
    """``gpu:2(IDX:0-1)``, ``gpu:h100:2(IDX:0-1)``, ``gpu:0``: the number of GPUs."""
    m = re.match(r"gpu(?::[^:(,]+)?:(\d+)", text)
    return int(m.group(1)) if m else 0


def gres_indices(text: str) -> list[int]:
    """``gpu:2(IDX:0-1,4)`` -> [0, 1, 4]."""
    m = re.search(r"IDX:([\d,-]+)", text)
    indices: list[int] = []
    for part in m.group(1).split(",") if m else ():
        lo, _, hi = part.partition("-")
        indices.extend(range(int(lo), int(hi or lo) + 1))
    return indices


def test_nodes_and_jobs_from_slurm_alone(slurm: SlurmCluster, tmp_path: Path) -> None:
    one = slurm.sbatch("-w", "gpu01", "--gres=gpu:2", "-J", "train-a")
    two = slurm.sbatch("-N", "2", "-w", "gpu02,gpu04", "--gres=gpu:3", "-J", "train-b")
    slurm.wait_job_running(one)
    slurm.wait_job_running(two)
    slurm.scontrol("update", "NodeName=gpu03", "State=DRAIN", "Reason=fan swap", check=True)

    nodes = {n["name"]: n for n in run_json(slurm, tmp_path, "nodes")["items"]}
    assert sorted(nodes) == slurm.live_nodes
    # factoryctl's state, and Slurm's own word for it.
    expected = {
        "gpu01": ("mixed", "MIXED"),
        "gpu02": ("mixed", "MIXED"),
        "gpu03": ("drained", "IDLE+DRAIN"),
        "gpu04": ("mixed", "MIXED"),
    }
    for name, (state, slurm_state) in expected.items():
        info = scontrol(slurm, "node", name)
        assert info["State"] == slurm_state, info
        assert nodes[name]["state"] == state, (name, info["State"])
        assert nodes[name]["gpus_total"] == gres_count(info["Gres"]) == 8
        assert nodes[name]["gpus_allocated"] == gres_count(info["GresUsed"]), info["GresUsed"]
        assert all(nodes[name][k] is None for k in NODE_TELEMETRY), nodes[name]
    assert nodes["gpu03"]["reason"] == "fan swap"
    assert [nodes[n]["gpus_allocated"] for n in slurm.live_nodes] == [2, 3, 0, 3]

    jobs = {j["job_id"]: j for j in run_json(slurm, tmp_path, "jobs")["items"]}
    assert sorted(jobs) == sorted([one, two])
    for job_id, name in ((one, "train-a"), (two, "train-b")):
        info = scontrol(slurm, "job", job_id)
        job = jobs[job_id]
        assert (job["state"], job["user"], job["name"]) == ("running", "root", name)
        assert job["nodes"] == info["NodeList"]
        assert all(job[k] is None for k in JOB_TELEMETRY), job
    assert (jobs[one]["gpus"], jobs[two]["gpus"]) == (2, 6)

    # One job: its allocation, GPU by GPU, is the one scontrol shows.
    doc = run_json(slurm, tmp_path, "job", two)
    assert doc["gpus"] is None and all(doc["job"][k] is None for k in JOB_TELEMETRY)
    out = slurm.scontrol("-d", "-o", "show", "job", two, check=True).stdout
    truth = {
        node: gres_indices(gres)
        for node, gres in re.findall(r"\bNodes=(\S+) CPU_IDs=\S+ Mem=\S+ GRES=(\S+)", out)
    }
    assert truth, out
    allocations = {a["node"]: a["gpus"] for a in doc["allocations"]}
    for hostlist, indices in truth.items():
        for node in expand(hostlist):
            assert allocations[node] == indices == [0, 1, 2], (allocations, out)
    assert sorted(allocations) == ["gpu02", "gpu04"]

    # One node: its row, its jobs; no GPU rows made up from nothing.
    doc = run_json(slurm, tmp_path, "node", "gpu01")
    assert doc["node"]["state"] == "mixed" and doc["node"]["gpus_allocated"] == 2
    assert doc["gpus"] is None and doc["processes"] is None
    assert [j["job_id"] for j in doc["jobs"]] == [one]


def test_without_prometheus_gpus_and_unknown_names_fail_in_one_line(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    res = factoryctl(slurm, tmp_path, "gpus")
    assert res.returncode == 4 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "needs GPU telemetry" in res.stderr
    res = factoryctl(slurm, tmp_path, "node", "gpu99")
    assert res.returncode == 3 and res.stderr == "factoryctl: error: unknown node: gpu99\n"
    res = factoryctl(slurm, tmp_path, "--scheduler", "none", "jobs")
    assert res.returncode == 4 and "no data source" in res.stderr


def unreachable_conf(cluster: SlurmCluster) -> Path:
    """The cluster's slurm.conf with slurmctld on a port nobody listens on (and a short
    message timeout: clients retry a refused connection for MessageTimeout)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = re.sub(r"(?m)^(SlurmctldPort|MessageTimeout)=.*\n", "", cluster.conf_path.read_text())
    path = cluster.dir / "etc" / "unreachable.conf"
    path.write_text(f"{conf}SlurmctldPort={port}\nMessageTimeout=1\n")
    return path


def test_an_unreachable_slurm_is_one_line_and_triage_says_critical(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    gone = {"SLURM_CONF": str(unreachable_conf(slurm))}
    for argv in (("nodes",), ("jobs", "-o", "json"), ("job", "1"), ("node", "gpu01")):
        res = factoryctl(slurm, tmp_path, *argv, env=gone)
        assert res.returncode == 8, res
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("factoryctl: error: ")
        assert "slurmctld" in res.stderr or "slurm controller" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and res.stdout == ""
    res = factoryctl(slurm, tmp_path, "triage", "--exit-code", env=gone)
    assert res.returncode == 21, res
    assert "could not read the scheduler" in res.stdout and "healthy" not in res.stdout
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_triage_of_a_drained_node_reports_it(slurm: SlurmCluster, tmp_path: Path) -> None:
    """A node an operator drained, and one NHC drained under a running job: triage names
    both (never "healthy"), from Slurm alone."""
    job = slurm.sbatch("-w", "gpu02", "--gres=gpu:2")
    slurm.wait_job_running(job)
    slurm.scontrol("update", "NodeName=gpu01", "State=DRAIN", "Reason=NHC: check_gpu", check=True)
    slurm.scontrol("update", "NodeName=gpu02", "State=DRAIN", "Reason=xid 79", check=True)
    res = factoryctl(slurm, tmp_path, "triage", "-o", "json")
    assert res.returncode == 0, res.stderr
    problems = json.loads(res.stdout)["items"]
    by_node = {p.get("node"): p for p in problems if p.get("node")}
    assert {"gpu01", "gpu02"} <= set(by_node), problems
    assert "NHC: check_gpu" in json.dumps(by_node["gpu01"])
    assert "xid 79" in json.dumps(by_node["gpu02"])
    text = factoryctl(slurm, tmp_path, "triage", "--exit-code")
    assert text.returncode in (20, 21) and "healthy" not in text.stdout
    assert "gpu01" in text.stdout and "gpu02" in text.stdout


def test_a_finished_job_still_counts_its_gpus(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Slurm drops a finished job's GPU indices (``gres_detail: []``); its count stands in
    ``tres_per_node`` (``gres:gpu:2`` on 22.05, ``gres/gpu:2`` on 24.11+): 4, never 0."""
    from factoryctl.lab.procs import wait_until

    done = slurm.sbatch("-N", "2", "--gres=gpu:2", script="sleep 1")
    cancelled = slurm.sbatch("-N", "1", "--gres=gpu:3", script="sleep 300")
    slurm.wait_job_running(cancelled)
    slurm.run(["scancel", cancelled], check=True)

    def state(job_id: str) -> str:
        res = factoryctl(slurm, tmp_path, "job", job_id, "-o", "json")
        return json.loads(res.stdout)["job"]["state"] if res.returncode == 0 else ""

    wait_until(lambda: state(done) == "completed", 30, f"job {done} to complete")
    wait_until(lambda: state(cancelled) == "cancelled", 30, f"job {cancelled} to be cancelled")
    raw = json.loads(slurm.run(["squeue", "--json", "--states=all"], check=True).stdout)
    listed = {str(j["job_id"]): j for j in raw["jobs"]}
    # What the issue found: Slurm no longer says which GPUs a finished job held.
    assert not listed[done].get("gres_detail"), listed[done].get("gres_detail")
    for job_id, gpus, nodes in ((done, 4, 2), (cancelled, 3, 1)):
        res = factoryctl(slurm, tmp_path, "job", job_id, "-o", "json")
        doc = json.loads(res.stdout)
        assert doc["job"]["gpus"] == gpus, doc
        assert [a["count"] for a in doc["allocations"]] == [gpus // nodes] * nodes, doc


def test_grouped_sinfo_states_agree_with_the_json_node_list(slurm: SlurmCluster) -> None:
    """The node cache's per-poll read (issue 13, part 5) says what the full JSON list says
    of every node: state, reason (a "|" in it too) and GPUs allocated; a plan's job read
    lists the running jobs alone. About 2 s a release."""
    from factoryctl.scheduler.node_cache import NodeCache
    from factoryctl.scheduler.slurm_cli import SlurmCLI

    job = slurm.sbatch("-w", "gpu01", "--gres=gpu:3")
    held = slurm.sbatch("--hold")
    slurm.wait_job_running(job)
    reason = "PSU swap | ticket 42"
    slurm.scontrol("update", "NodeName=gpu02", "State=DRAIN", f"Reason={reason}", check=True)
    slurm.scontrol("update", "NodeName=gpu03", "State=DOWN", "Reason=cable", check=True)
    cli = SlurmCLI(env=slurm.env)
    full = cli.nodes()
    states = cli.node_states()
    assert sorted(states) == sorted(n.name for n in full) == slurm.live_nodes
    for node in full:
        got = states[node.name]
        assert (got.state, got.reason, got.gpus_allocated) == (
            node.state,
            node.reason,
            node.gpus_allocated,
        ), node
    assert states["gpu01"].gpus_allocated == 3 and states["gpu02"].reason == reason
    # A plan's read: the running job alone, on every release (22.05 ignores --states).
    assert [j.job_id for j in cli.running_jobs()] == [job]
    assert held in {j.job_id for j in cli.jobs()}
    # A poll through the cache after a full read merges onto it: nothing reread.
    cache = NodeCache(cli)
    assert cache.nodes() == full
    assert cache.nodes() == full and (cache.full_reads, cache.state_reads) == (1, 1)
