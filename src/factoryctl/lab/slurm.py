"""A real multi-node Slurm cluster on one host, for the lab and integration tests.

Any generation the lab knows (``factoryctl.lab.debian``): the host's release runs
natively, another one from its chroot, daemons and clients alike (a 22.05 ``scontrol``
cannot talk to a 24.11 slurmctld). ``env`` puts that release's clients first on PATH.

Everything lives in one private directory: munge key and socket, slurm.conf, gres.conf,
spool and state directories, pid files, logs and the fake GPU character devices. Ports
come from the kernel. Several clusters can therefore run side by side on one machine
(other test runs do), and stopping one never touches another: every daemon is stopped
by the PID we started it with (or, after a simulated reboot, by the PID its restart
recorded in our directory).

Fake GPUs: 22.05 drops a GPU whose gres.conf entry has no ``File=`` and rejects plain
files, so we make character devices with the NVIDIA major number (195).

slurmrestd, two ways: ``start_slurmrestd`` on a unix socket with ``rest_auth/local`` (as
root, which 22.05 and 24.11 allow only with ``SLURMRESTD_SECURITY=disable_user_check`` and
26.05 refuses outright), and ``start_slurmrestd_jwt`` on 127.0.0.1 with ``rest_auth/jwt``
as ``nobody``, as a site runs it, on every release; ``jwt_token`` gets its token from
``scontrol token``. JWT needs the release's slurm-wlm-jwt-plugin (``jwt``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factoryctl.lab.debian import DebianRelease, host_codename
from factoryctl.lab.leftovers import is_ours, kill_all, our_processes
from factoryctl.lab.procs import ManagedProcess, free_port, port_open, wait_until
from factoryctl.lab.slurm_conf import write_lab_files
from factoryctl.lab.slurmdbd import AccountingDaemons

# The client programs a release's ``env`` puts first on PATH.
CLIENTS = ("sinfo", "squeue", "scontrol", "sbatch", "srun", "salloc", "scancel", "sacct",
           "sacctmgr", "sreport", "sprio", "sshare", "sstat", "sdiag")  # fmt: skip
SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "scontrol", "sinfo", "squeue", "sbatch")


def slurm_available(release: DebianRelease | None = None) -> bool:
    rel = release or DebianRelease(host_codename())
    # mknod of char devices, SlurmUser=root and chroot all need root.
    return rel.has(*SLURM_PROGRAMS) and os.geteuid() == 0


@dataclass
class SlurmCluster:
    """``with SlurmCluster(nodes=4) as c: subprocess.run([...], env=c.env)``."""

    nodes: int = 4
    gpus_per_node: int = 8
    cpus_per_node: int = 16
    prefix: str = "gpu"
    # Nodes declared in slurm.conf without a slurmd (they read DOWN): lets a benchmark
    # address a 1,000-node hostlist without running 1,000 daemons.
    extra_nodes: int = 0
    prolog: str | None = None
    epilog: str | None = None
    extra_conf: Sequence[str] = ()
    base_dir: Path | None = None
    # Host directories a chroot release must see (what its Prolog/Epilog scripts run).
    shared: Sequence[str] = ()
    release: DebianRelease = field(default_factory=lambda: DebianRelease(host_codename()))
    # slurmdbd + MariaDB (``factoryctl.lab.slurmdbd``): sacct answers, jobs carry accounts.
    accounting: bool = False
    dir: Path = field(init=False)
    node_names: list[str] = field(init=False, default_factory=list)
    ctld_port: int = field(init=False, default=0)
    rest_url: str = field(init=False, default="")  # slurmrestd over TCP (JWT), once started
    procs: list[ManagedProcess] = field(init=False, default_factory=list)
    _owns_dir: bool = field(init=False, default=False)
    dbd: AccountingDaemons | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        width = max(2, len(str(self.nodes + self.extra_nodes)))
        total = self.nodes + self.extra_nodes
        self.node_names = [f"{self.prefix}{i:0{width}d}" for i in range(1, total + 1)]

    # -- layout ---------------------------------------------------------------------------
    @property
    def live_nodes(self) -> list[str]:
        return self.node_names[: self.nodes]

    @property
    def conf_path(self) -> Path:
        return self.dir / "etc" / "slurm.conf"

    @property
    def cluster_name(self) -> str:
        m = re.search(r"^ClusterName=(\S+)", self.conf_path.read_text(), re.M)
        if m is None:
            raise RuntimeError(f"no ClusterName in {self.conf_path}")
        return m.group(1)

    @property
    def munge_socket(self) -> Path:
        return self.dir / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """The environment for any Slurm command against this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SQUEUE_"))}
        env.pop("SINFO_FORMAT", None)
        env["SLURM_CONF"] = str(self.conf_path)
        if not self.release.native:
            env["PATH"] = f"{self.dir / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        # Marks every process started for this cluster (jobs inherit it through sbatch),
        # so stop() can find leftovers by their environment, never by name.
        env["FACTORYCTL_LAB_DIR"] = str(self.dir)
        return env

    def _write_config(self) -> None:
        if not self.release.native:
            hooks = [str(Path(h).resolve().parent) for h in (self.prolog, self.epilog) if h]
            extra = [
                d for d in (*self.shared, *hooks, str(self.dir)) if d not in self.release.shared
            ]
            self.release = dataclasses.replace(
                self.release, shared=(*self.release.shared, *dict.fromkeys(extra))
            )
            bin_dir = self.dir / "bin"
            bin_dir.mkdir(parents=True, exist_ok=True)
            for name in CLIENTS:
                if self.release.which(name):
                    (bin_dir / name).write_text(self.release.wrapper(name))
                    (bin_dir / name).chmod(0o755)
        extra_conf = list(self.extra_conf)
        if self.accounting:
            # Its daemons go straight into our procs, so stop() reaches a half-started one.
            self.dbd = AccountingDaemons(
                self.release, self.dir, self.munge_socket, self.env, procs=self.procs,
                jwt_key=self.dir / "etc" / "jwt.key" if self.jwt else None,
            )  # fmt: skip
            extra_conf = [*self.dbd.conf_lines(), *extra_conf]
        self.ctld_port = write_lab_files(
            self.dir,
            munge_socket=self.munge_socket,
            node_names=self.node_names,
            live_nodes=self.live_nodes,
            gpus_per_node=self.gpus_per_node,
            cpus_per_node=self.cpus_per_node,
            prolog=self.prolog,
            epilog=self.epilog,
            extra_conf=extra_conf,
            slurm_version=self.release.slurm_version(),
            jwt=self.jwt,
        )

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> SlurmCluster:
        if self.base_dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="factoryctl-slurm-"))
            self._owns_dir = True
        else:
            self.dir = self.base_dir
            self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_config()
            self._start_daemons(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_daemons(self, timeout: float) -> None:
        d = self.dir
        munged = ManagedProcess(
            "munged",
            self.release.argv(
                "munged",
                "-F",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={d / 'etc' / 'munge.key'}",
                f"--pid-file={d / 'run' / 'munged.pid'}",
                f"--log-file={d / 'log' / 'munged.log'}",
                f"--seed-file={d / 'munge' / 'munge.seed'}",
            ),
            d / "log" / "munged.out",
        )
        self.procs.append(munged.start())
        wait_until(self.munge_socket.exists, 10, "munged socket")
        env = self.env
        if self.dbd is not None:
            self.dbd.start_mariadb(timeout)
            self.dbd.start_slurmdbd(timeout)
            self.dbd.add_associations(self.cluster_name, ["root"])
        ctld = ManagedProcess(
            "slurmctld",
            self.release.argv("slurmctld", "-D", "-i"),
            d / "log" / "slurmctld.out",
            env=env,
        )
        self.procs.append(ctld.start())
        wait_until(lambda: self._ctld_up(ctld), timeout, "slurmctld")
        for name in self.live_nodes:
            node_env = dict(env, FACTORYCTL_LAB_NODE=name)
            slurmd = ManagedProcess(
                f"slurmd-{name}",
                self.release.argv("slurmd", "-D", "-N", name),
                d / "log" / f"slurmd-{name}.out",
                env=node_env,
            )
            self.procs.append(slurmd.start())
        self.wait_nodes_idle(timeout)

    # -- slurmrestd -----------------------------------------------------------------------
    @property
    def jwt(self) -> bool:
        """Whether the cluster offers JWT (auth/jwt in AuthAltTypes, ``scontrol token``,
        slurmrestd's rest_auth/jwt): where the release has the plugin package
        slurm-wlm-jwt-plugin."""
        return self.release.has_slurm_plugin("auth_jwt") and self.release.has_slurm_plugin(
            "rest_auth_jwt"
        )

    @property
    def local_rest_auth(self) -> bool:
        """Whether this release's slurmrestd serves ``rest_auth/local`` on a unix socket when
        run as root with ``SLURMRESTD_SECURITY=disable_user_check`` (the lab's only way to be
        the same user as its client). 26.05 refuses that as fatal ("should only be used for
        development"); the lab then offers JWT over TCP only."""
        return self.release.slurm_version() < (26, 5)

    def _openapi_plugin(self) -> str:
        # 22.05 names its plugins by API version; 23.02 and later load openapi/slurmctld,
        # which serves every data_parser version the release has (v0.0.38 there is fatal).
        # With slurmdbd, its plugin too (the /slurmdb/ endpoints); without one it must not
        # load (it fails to start).
        legacy = self.release.slurm_version() < (23, 2)
        plugins = ["openapi/v0.0.38"] if legacy else ["openapi/slurmctld"]
        if self.accounting:
            plugins.append("openapi/dbv0.0.38" if legacy else "openapi/slurmdbd")
        return ",".join(plugins)

    def _running(self, name: str) -> bool:
        return any(p.name == name and p.alive() for p in self.procs)

    def _start_rest(self, name: str, args: Sequence[str], env: dict[str, str],
                    ready: Callable[[], bool], timeout: float) -> None:  # fmt: skip
        proc = ManagedProcess(
            name,
            self.release.argv("slurmrestd", "-s", self._openapi_plugin(), *args),
            self.dir / "log" / f"{name}.out",
            env=env,
        )
        self.procs.append(proc.start())

        def up() -> bool:
            if not proc.alive():
                raise RuntimeError(f"{name} exited:\n{proc.log_tail(5)}")
            return ready()

        wait_until(up, timeout, name)

    def start_slurmrestd(self, timeout: float = 15.0) -> Path:
        """slurmrestd on a unix socket in our directory (local auth); returns the socket.

        It refuses to run as root unless told the check is not wanted, which 26.05 refuses
        outright (see ``local_rest_auth``; use ``start_slurmrestd_jwt`` there); with no
        slurmdbd only the slurmctld plugin may load (no dbv* plugins)."""
        sock = self.dir / "run" / "slurmrestd.socket"
        if self._running("slurmrestd"):
            return sock  # already running (a session-wide cluster shared by tests)
        if not self.local_rest_auth:
            major, minor = self.release.slurm_version()
            raise RuntimeError(
                f"Slurm {major}.{minor:02d}'s slurmrestd will not serve rest_auth/local to root"
                " (SLURMRESTD_SECURITY=disable_user_check is fatal); use start_slurmrestd_jwt()"
            )
        env = dict(self.env, SLURMRESTD_SECURITY="disable_user_check")
        env.pop("SLURM_JWT", None)
        self._start_rest(
            "slurmrestd", ["-a", "rest_auth/local", f"unix:{sock}"], env, sock.exists, timeout
        )
        return sock

    def start_slurmrestd_jwt(self, timeout: float = 15.0) -> str:
        """slurmrestd on 127.0.0.1 (a free port) with ``rest_auth/jwt``, as ``nobody``, as a
        site runs it; returns its URL. Requests need ``jwt_token()``'s token. Works on every
        release the lab knows. By number: 26.05 cannot resolve ``nobody`` by name ("Unable to
        resolve user"); 22.05 has no ``-g`` (it takes the user's own group)."""
        if self._running("slurmrestd-jwt") and self.rest_url:
            return self.rest_url
        if not self.jwt:
            raise RuntimeError(
                f"release {self.release.codename} has no auth/jwt plugin: install"
                " slurm-wlm-jwt-plugin there (./dev test does on the host)"
            )
        port = free_port()
        drop = ["-u", "65534"]
        if self.release.slurm_version() >= (23, 2):
            drop += ["-g", "65534"]
        self._start_rest(
            "slurmrestd-jwt",
            ["-a", "rest_auth/jwt", *drop, f"127.0.0.1:{port}"],
            # auth/jwt becomes slurmrestd's own auth type for talking to slurmctld; without
            # it 26.05's munge plugin rejects every token ("Rejecting thread config token").
            dict(self.env, SLURM_JWT="daemon"),
            functools.partial(port_open, port),
            timeout,
        )
        self.rest_url = f"http://127.0.0.1:{port}"
        return self.rest_url

    def jwt_token(self, username: str = "root", lifespan: int = 3600) -> str:
        """A token from ``scontrol token`` of this release (slurmctld signs it)."""
        out = self.scontrol(
            "token", f"username={username}", f"lifespan={lifespan}", check=True
        ).stdout
        m = re.search(r"SLURM_JWT=(\S+)", out)
        if not m:
            raise RuntimeError(f"scontrol token printed no SLURM_JWT: {out.strip()[:200]}")
        return m.group(1)

    def _ctld_up(self, ctld: ManagedProcess) -> bool:
        if not ctld.alive():
            raise RuntimeError(f"slurmctld exited:\n{ctld.log_tail()}")
        return self.scontrol("ping").returncode == 0

    def node_table(self) -> dict[str, dict[str, Any]]:
        """What Slurm itself says of each node, read from ``scontrol -o show node`` text in
        every generation without factoryctl's parsers (tests check those against it):
        ``{"gpu01": {"state": "idle", "state_flags": ["DRAIN"], "reason": "..."}}``."""
        out = self.scontrol("-o", "show", "node", check=True).stdout
        table: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            head, _, reason = line.partition(" Reason=")
            fields: dict[str, str] = {
                m.group(1): m.group(2) for m in re.finditer(r"(?:^|\s)(NodeName|State)=(\S+)", head)
            }
            if "NodeName" not in fields:
                continue
            base, *flags = fields.get("State", "").split("+")
            table[fields["NodeName"]] = {
                "state": base.lower(),
                "state_flags": flags,
                # "bad DIMM [root@2026-12-06T01:00:00]": the suffix is who and when.
                "reason": re.sub(r"\s*\[[^\[\]@]*@[0-9T:\-]+\]\s*$", "", reason.rstrip()),
            }
        return table

    def node_states(self) -> dict[str, str]:
        return {name: n["state"] for name, n in self.node_table().items()}

    def node_info(self, name: str) -> dict[str, str]:
        out = self.scontrol("-o", "show", "node", name, check=True).stdout
        info: dict[str, str] = {}
        for token in out.split():
            key, _, value = token.partition("=")
            info[key] = value
        return info

    def wait_nodes_idle(self, timeout: float = 30.0, nodes: Sequence[str] | None = None) -> None:
        want = list(nodes) if nodes is not None else self.live_nodes

        def idle() -> bool:
            for name in want:
                state = self.node_info(name).get("State", "")
                if state != "IDLE":
                    return False
            return True

        try:
            wait_until(idle, timeout, f"nodes {','.join(want)} idle", interval=0.2)
        except TimeoutError as err:
            raise TimeoutError(f"{err}\n{self.diagnostics()}") from err

    def diagnostics(self) -> str:
        parts = []
        for p in self.procs:
            parts.append(f"--- {p.name} alive={p.alive()}\n{p.log_tail(10)}")
        log = self.dir / "log" / "slurmctld.log"
        if log.exists():
            parts.append("--- slurmctld.log\n" + "\n".join(log.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    def run(
        self, argv: Sequence[str], check: bool = False, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        # Clients through this release (a 22.05 scontrol cannot talk to a 24.11 slurmctld).
        real = self.release.argv(argv[0], *argv[1:]) if "/" not in argv[0] else list(argv)
        result = subprocess.run(real, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
        return result

    def scontrol(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run(["scontrol", *args], check=check)

    def sbatch(self, *args: str, script: str = "sleep 300") -> str:
        """Submit a job; returns its id."""
        out = self.run(
            [
                "sbatch",
                "--parsable",
                f"--chdir={self.dir / 'tmp'}",
                "-o",
                "/dev/null",
                *args,
                f"--wrap={script}",
            ],
            check=True,
        ).stdout
        return out.strip().split(";")[0]

    def wait_job_running(self, job_id: str, timeout: float = 20.0) -> None:
        def running() -> bool:
            out = self.scontrol("-o", "show", "job", job_id).stdout
            return "JobState=RUNNING" in out

        wait_until(running, timeout, f"job {job_id} running", interval=0.2)

    def cancel_all(self) -> None:
        self.run(["scancel", "--full", "-u", "root"])

    def reset(self, timeout: float = 30.0) -> None:
        """Between tests: no jobs, no reservations, every live node idle and reason-free."""
        self.cancel_all()
        out = self.scontrol("-o", "show", "reservation").stdout
        for line in out.splitlines():
            if line.startswith("ReservationName="):
                name = line.split()[0].partition("=")[2]
                self.scontrol("delete", f"ReservationName={name}")
        nodelist = ",".join(self.live_nodes)

        def clean() -> bool:
            ok = True
            for name in self.live_nodes:
                info = self.node_info(name)
                state = info.get("State", "")
                if state == "IDLE":
                    continue
                ok = False
                if "REBOOT" in state:
                    continue  # let a pending reboot finish or time out
                if "DRAIN" in state or "DOWN" in state or "FAIL" in state:
                    self.scontrol("update", f"NodeName={name}", "State=RESUME")
            return ok

        self.scontrol("update", f"NodeName={nodelist}", "State=UNDRAIN")
        wait_until(clean, timeout, "cluster reset to idle", interval=0.3)

    def stop(self) -> None:
        ctld = next((p for p in self.procs if p.name == "slurmctld"), None)
        if ctld is not None and ctld.alive():
            with contextlib.suppress(Exception):
                self.cancel_all()
                wait_until(lambda: not self.run(["squeue", "-h"]).stdout.strip(), 5, "jobs gone")
        # Slurmds restarted by a simulated reboot are not our children: their PIDs are in
        # the pid files they (and the reboot script) wrote in our directory.
        for proc in reversed(self.procs):
            if proc.name.startswith("slurmd"):
                proc.stop()
        if hasattr(self, "dir"):
            run = self.dir / "run"
            for pidfile in sorted(run.glob("restart-*.pid")) + sorted(run.glob("slurmd-*.pid")):
                with contextlib.suppress(ValueError, OSError):
                    pid = int(pidfile.read_text().strip())
                    if is_ours(pid, self.dir):
                        # Not our child: once dead it is a zombie of init, which
                        # stop_pid's existence probe would wait out; _kill_all does not.
                        kill_all([pid])
        for proc in reversed(self.procs):
            if not proc.name.startswith("slurmd"):
                proc.stop()
        self.procs.clear()
        if hasattr(self, "dir"):
            # Job steps (slurmstepd and the job's processes) outlive a killed slurmd.
            kill_all(our_processes(self.dir))
        if self._owns_dir and hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """``python -m factoryctl.lab.slurm [NODES [RELEASE]] [--accounting]``: a cluster to
    try factoryctl against, of the host's Slurm or of a lab release (``trixie``: 24.11,
    ``forky``: 26.05); ``--accounting`` adds slurmdbd and MariaDB (sacct answers)."""
    import sys

    from factoryctl.lab.debian import release

    accounting = "--accounting" in sys.argv[1:]
    args = [a for a in sys.argv[1:] if a != "--accounting"]
    nodes = int(args[0]) if args else 4
    rel = release(args[1]) if len(args) > 1 else DebianRelease(host_codename())

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (and SIGINT, which a shell's "&" ignores) must still stop every daemon.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    with SlurmCluster(nodes=nodes, release=rel, accounting=accounting) as cluster:
        print(f"export SLURM_CONF={cluster.conf_path}")
        if not rel.native:  # that release's clients, run in its chroot
            print(f"export PATH={cluster.dir / 'bin'}:$PATH")
        print(f"# {nodes} nodes up ({', '.join(cluster.live_nodes)}); Ctrl-C stops everything")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
