"""The slurmrestd backend against the real slurmrestd of every Slurm generation the lab has.

One cluster per release (22.05 on the host, 24.11 and 26.05 from their chroots), with
slurmrestd over TCP with JWT (``rest_auth/jwt``, as ``nobody``) and, where the release
lets root use it (not 26.05), on a unix socket with local auth. Reads must equal what
scontrol shows; drain/resume and maintenance windows go over REST where the version has
the endpoint (checked here by which route was taken) and land in slurmctld as scontrol
would put them there. The fixtures are local to this module; clusters stop by PID.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.lab import debian
from factoryctl.lab.procs import wait_until
from factoryctl.lab.slurm import SlurmCluster, slurm_available
from factoryctl.model import NodeState
from factoryctl.scheduler.base import ReservationRequest
from factoryctl.scheduler.checked import CheckedScheduler
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurmrestd import SlurmRestd, open_slurmrestd

pytestmark = [pytest.mark.integration]

# What each generation's slurmrestd offers, newest last (the backend takes the newest),
# and whether its newest version has node updates and reservation writes.
OFFERS = {
    (22, 5): (("v0.0.38",), False, False),
    (24, 11): (("v0.0.40", "v0.0.41", "v0.0.42"), True, False),
    (26, 5): (("v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"), True, True),
}
# As the actions layer stores it. (scontrol drops a value's leading and trailing double
# quote on every release, REST does not: a reason that ends in one would differ.)
REASON = "factoryctl: xid 79; `id` $(x) \"q\" 'é' (erin)"


@pytest.fixture(scope="module", params=debian.RELEASES)
def rest_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    codename = request.param
    rel = debian.available(codename)
    if rel is None:
        pytest.skip(
            f"release {codename} is not built here (python -m factoryctl.lab release {codename})"
        )
    if not slurm_available(rel):
        pytest.skip(f"{codename}: needs slurm-wlm + munge + slurmrestd and root")
    if not rel.has("slurmrestd"):
        pytest.skip(f"{codename}: slurmrestd is not installed")
    cluster = SlurmCluster(nodes=4, gpus_per_node=4, cpus_per_node=8, release=rel)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(rest_cluster: SlurmCluster) -> SlurmCluster:
    rest_cluster.reset()
    return rest_cluster


def _jwt_rest(cluster: SlurmCluster, tmp_path: Path) -> SlurmRestd:
    if not cluster.jwt:
        pytest.skip(f"{cluster.release.codename}: slurm-wlm-jwt-plugin is not installed")
    url = cluster.start_slurmrestd_jwt()
    token = tmp_path / "jwt"
    token.write_text(cluster.jwt_token(lifespan=600) + "\n")
    env = dict(cluster.env, USER="root")
    return open_slurmrestd({"slurmrestd_url": url, "jwt_file": str(token)}, env)


@pytest.fixture
def jwt_rest(cluster: SlurmCluster, tmp_path: Path) -> SlurmRestd:
    return _jwt_rest(cluster, tmp_path)


def _show_node(cluster: SlurmCluster, name: str) -> tuple[str, str]:
    """State and reason as ``scontrol show node`` prints them (the reason is the line's
    last field, spaces and all, before Slurm's ``[user@time]``)."""
    out = cluster.scontrol("-o", "show", "node", name, check=True).stdout.strip()
    state = re.search(r"\bState=(\S+)", out)
    reason = re.search(r"\bReason=(.*) \[[^\]]*\]$", out)
    return (state.group(1) if state else "", reason.group(1) if reason else "")


def _offers(cluster: SlurmCluster) -> tuple[tuple[str, ...], bool, bool]:
    return OFFERS[cluster.release.slurm_version()]


def test_version_and_reads_equal_scontrol(cluster: SlurmCluster, jwt_rest: SlurmRestd) -> None:
    job = cluster.sbatch("-w", "gpu01", "--gres=gpu:2", script="sleep 120")
    cluster.wait_job_running(job)
    cluster.scontrol("update", "NodeName=gpu03", "State=DRAIN", "Reason=bad DIMM", check=True)
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    cluster.scontrol("create", "reservation", "ReservationName=maint-r", "Nodes=gpu04",
                     f"StartTime={start}", "Duration=60", "Users=root", "Flags=MAINT,IGNORE_JOBS",
                     check=True)  # fmt: skip
    offered, _, _ = _offers(cluster)
    assert jwt_rest.detect() == offered[-1]
    assert jwt_rest.api().offered == offered
    cli = SlurmCLI(env=cluster.env)

    def nodes(backend: SlurmCLI | SlurmRestd) -> dict[str, tuple[object, ...]]:
        return {
            n.name: (n.state, n.reason, n.gpu_count, n.gpus_allocated, n.partitions)
            for n in backend.nodes()
        }

    assert nodes(jwt_rest) == nodes(cli)
    assert nodes(jwt_rest)["gpu03"][:2] == (NodeState.DRAINED, "bad DIMM")
    jobs = {j.job_id: (j.user, j.state, j.allocations) for j in jwt_rest.jobs()}
    assert jobs == {j.job_id: (j.user, j.state, j.allocations) for j in cli.jobs()}
    assert [(a.node, a.gpu_indices) for a in jobs[job][2]] == [("gpu01", (0, 1))]
    rest_res = [(r.name, r.nodes, r.start_time, r.end_time, r.maintenance, r.users)
                for r in jwt_rest.reservations()]  # fmt: skip
    cli_res = [(r.name, r.nodes, r.start_time, r.end_time, r.maintenance, r.users)
               for r in cli.reservations()]  # fmt: skip
    assert rest_res == cli_res
    assert rest_res[0][:2] == ("maint-r", ("gpu04",))
    assert all(c.startswith("GET /") for c in jwt_rest.calls)
    assert jwt_rest.writer.calls == []


def test_drain_and_resume(cluster: SlurmCluster, jwt_rest: SlurmRestd) -> None:
    job = cluster.sbatch("-w", "gpu01", "--gres=gpu:1", script="sleep 120")
    cluster.wait_job_running(job)
    _, node_writes, _ = _offers(cluster)
    jwt_rest.drain(["gpu01", "gpu02"], REASON)
    assert _show_node(cluster, "gpu01") == ("MIXED+DRAIN", REASON)
    assert _show_node(cluster, "gpu02") == ("IDLE+DRAIN", REASON)
    nodes = {n.name: n for n in jwt_rest.nodes()}
    assert (nodes["gpu01"].state, nodes["gpu02"].state) == (
        NodeState.DRAINING,
        NodeState.DRAINED,
    )
    jwt_rest.resume(["gpu01", "gpu02"])
    wait_until(
        lambda: (
            _show_node(cluster, "gpu02")[0] == "IDLE" and _show_node(cluster, "gpu01")[0] == "MIXED"
        ),
        15,
        "resumed",
        interval=0.2,
    )
    version = jwt_rest.version
    if node_writes:
        # One call for the whole node set each time, and no scontrol at all.
        posts = [c for c in jwt_rest.calls if c.startswith("POST")]
        assert posts == [f"POST /slurm/{version}/nodes/"] * 2
        assert jwt_rest.writer.calls == []
    else:
        assert [argv[:2] for argv in jwt_rest.writer.calls] == [["scontrol", "update"]] * 2
    # What the rollout does where Slurm kept the reason after the resume (24.11 without
    # accounting storage): a blank reason, the node staying in service.
    jwt_rest.clear_reason(["gpu02"])
    assert _show_node(cluster, "gpu02")[0] == "IDLE"
    assert not _show_node(cluster, "gpu02")[1].strip()


def test_an_unknown_node_is_not_found(cluster: SlurmCluster, jwt_rest: SlurmRestd) -> None:
    with pytest.raises(FactoryctlError) as info:
        jwt_rest.drain(["gpu99"], "no such node")
    assert info.value.status is ExitStatus.NOT_FOUND, info.value.message
    assert "\n" not in info.value.message


def test_maintenance_window(cluster: SlurmCluster, jwt_rest: SlurmRestd) -> None:
    _, _, rest_reservations = _offers(cluster)
    start = time.time() + 1800
    request = ReservationRequest("maint-rest", ("gpu03", "gpu04"), start, 5400, ("root",))
    assert jwt_rest.create_reservation(request) == "maint-rest"
    shown = cluster.scontrol("-o", "show", "reservation", "maint-rest", check=True).stdout
    assert "Nodes=gpu[03-04]" in shown and "Users=root" in shown
    assert re.search(r"Flags=\S*MAINT\S*IGNORE_JOBS", shown), shown
    assert f"StartTime={time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(start))}" in shown
    assert "Duration=01:30:00" in shown
    (res,) = jwt_rest.reservations()
    assert (res.name, res.nodes, res.maintenance) == ("maint-rest", ("gpu03", "gpu04"), True)
    # A second create of the same name is refused and leaves the window as it was.
    with pytest.raises(FactoryctlError) as info:
        jwt_rest.create_reservation(ReservationRequest("maint-rest", ("gpu01",), start, 60))
    assert info.value.status is ExitStatus.SCHEDULER_ERROR
    assert jwt_rest.reservations()[0].nodes == ("gpu03", "gpu04")
    jwt_rest.delete_reservation("maint-rest")
    assert "maint-rest" not in cluster.scontrol("-o", "show", "reservation").stdout
    with pytest.raises(FactoryctlError) as info:
        jwt_rest.delete_reservation("maint-rest")
    assert info.value.status is ExitStatus.NOT_FOUND, info.value.message
    version = jwt_rest.version
    writes = [c for c in jwt_rest.calls if not c.startswith("GET")]
    if rest_reservations:
        assert writes == [
            f"POST /slurm/{version}/reservation",
            f"DELETE /slurm/{version}/reservation/maint-rest",
            f"DELETE /slurm/{version}/reservation/maint-rest",
        ]
        assert jwt_rest.writer.calls == []
    else:
        assert writes == []
        assert [argv[:2] for argv in jwt_rest.writer.calls] == [
            ["scontrol", "create"],
            ["scontrol", "create"],
            ["scontrol", "delete"],
            ["scontrol", "delete"],
        ]


def test_jwt_is_checked(cluster: SlurmCluster, jwt_rest: SlurmRestd, tmp_path: Path) -> None:
    url = cluster.start_slurmrestd_jwt()
    anonymous = open_slurmrestd({"slurmrestd_url": url}, {"USER": "root"})
    with pytest.raises(FactoryctlError) as info:
        anonymous.nodes()
    assert info.value.status is ExitStatus.SCHEDULER_ERROR and "JWT" in info.value.message
    forged = tmp_path / "forged"
    token = cluster.jwt_token(lifespan=600)
    forged.write_text(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    bad = open_slurmrestd({"slurmrestd_url": url, "jwt_file": str(forged)}, {"USER": "root"})
    with pytest.raises(FactoryctlError) as info:
        bad.nodes()
    assert "\n" not in info.value.message
    if cluster.release.slurm_version() < (23, 2):
        # 22.05 answers a bad token as it answers a lost slurmctld: "Unspecified error".
        assert info.value.status is ExitStatus.SCHEDULER_UNREACHABLE
    else:
        assert info.value.status is ExitStatus.SCHEDULER_ERROR and "JWT" in info.value.message


def test_unix_socket_with_local_auth(cluster: SlurmCluster) -> None:
    if not cluster.local_rest_auth:
        with pytest.raises(RuntimeError, match="rest_auth/local"):
            cluster.start_slurmrestd()
        major, minor = cluster.release.slurm_version()
        pytest.skip(
            f"Slurm {major}.{minor:02d}: slurmrestd refuses rest_auth/local as"
            " root (SLURMRESTD_SECURITY=disable_user_check is fatal); JWT over TCP covers it"
        )
    sock = cluster.start_slurmrestd()
    rest = open_slurmrestd({"slurmrestd_url": f"unix:{sock}", "jwt_file": ""}, cluster.env)
    offered, node_writes, _ = _offers(cluster)
    assert rest.detect() == offered[-1]
    rest.drain(["gpu02"], REASON)
    assert _show_node(cluster, "gpu02") == ("IDLE+DRAIN", REASON)
    assert {n.name: n.state for n in rest.nodes()}["gpu02"] is NodeState.DRAINED
    rest.resume(["gpu02"])
    wait_until(lambda: _show_node(cluster, "gpu02")[0] == "IDLE", 15, "gpu02 idle")
    assert (rest.writer.calls == []) is node_writes


def test_cli_drains_through_slurmrestd(cluster: SlurmCluster, tmp_path: Path) -> None:
    from factoryctl.cli.env import Environment
    from factoryctl.cli.main import main

    if not cluster.jwt:
        pytest.skip(f"{cluster.release.codename}: slurm-wlm-jwt-plugin is not installed")
    url = cluster.start_slurmrestd_jwt()
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdout=out,
        stderr=err,
        stdin_isatty=False,
        environ={
            **cluster.env,
            "HOME": str(tmp_path),
            "USER": "root",
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "FACTORYCTL_SCHEDULER_TYPE": "slurmrestd",
            "FACTORYCTL_SCHEDULER_SLURMRESTD_URL": url,
            "SLURM_JWT": cluster.jwt_token(lifespan=600),
        },
    )
    argv = ["-o", "json", "drain", "gpu02", "--reason", "via rest", "--yes"]
    assert main(argv, env) == 0, err.getvalue()
    assert json.loads(out.getvalue())["nodes"][0]["result"] == "changed"
    scheduler = env.scheduler()
    assert isinstance(scheduler, CheckedScheduler)  # the gate every command goes through
    assert isinstance(scheduler.inner, SlurmRestd)
    assert "GET /openapi/v3" in scheduler.calls
    assert _show_node(cluster, "gpu02")[0] == "IDLE+DRAIN"
    assert _show_node(cluster, "gpu02")[1] == "factoryctl: via rest (root)"
