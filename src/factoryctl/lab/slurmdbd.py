"""Slurm accounting for a lab cluster: a private MariaDB and a slurmdbd in front of it.

Every site keeps finished jobs in slurmdbd (``sacct``); without it Slurm forgets a job
MinJobAge after it ends. The lab runs the release's own ``mariadbd`` and ``slurmdbd``
(from its chroot for 24.11 and 26.05, so the database client library slurmdbd was built
against is the one it talks to), each in the cluster's directory and on 127.0.0.1 ports
from the kernel, and stopped by PID with the cluster.

MariaDB: a fresh datadir from ``mariadb-install-db``; it runs as root (``--user=root``:
the datadir is root's, and a chroot's ``mysql`` user would own nothing of ours). Grant
tables stay on: slurmdbd logs in over TCP as a user with a password, as at a site, which
also checks that ``StorageUser``/``StoragePass`` reach the plugin. Root gets in over the
unix socket (``unix_socket`` authentication) to create that user.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from factoryctl.lab.debian import DebianRelease
from factoryctl.lab.procs import ManagedProcess, free_port, port_open, wait_until

# The lab's accounts: two, so reports by account have something to tell apart.
LAB_ACCOUNTS = ("proj-a", "proj-b")
STORAGE_USER = "slurm"
DATABASE = "slurm_acct_db"


@dataclass
class AccountingDaemons:
    """mariadbd + slurmdbd of one release, in ``dir`` (the cluster's directory)."""

    release: DebianRelease
    dir: Path
    munge_socket: Path
    env: dict[str, str]
    dbd_port: int = field(default_factory=free_port)
    db_port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    # Where each daemon is recorded as soon as it starts (the cluster's list): whoever
    # owns it stops them by PID, a half-started one too.
    procs: list[ManagedProcess] = field(default_factory=list)
    # The cluster's JWT key, where it offers JWT: slurmrestd's /slurmdb/ endpoints reach
    # slurmdbd with the caller's token, which slurmdbd must then accept too.
    jwt_key: Path | None = None

    @property
    def db_dir(self) -> Path:
        return self.dir / "mariadb"

    @property
    def db_socket(self) -> Path:
        return self.db_dir / "mysqld.sock"

    def conf_lines(self) -> list[str]:
        """What slurm.conf needs to send jobs to this slurmdbd (GPUs counted in TRES)."""
        return [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=localhost",
            f"AccountingStoragePort={self.dbd_port}",
            # The munge socket for talking to slurmdbd (AuthInfo is not used for that).
            f"AccountingStoragePass={self.munge_socket}",
            # gres/gpu is not a default TRES: without it sacct's tres.allocated has no GPUs.
            "AccountingStorageTRES=gres/gpu",
            "AccountingStorageEnforce=associations",
        ]

    # -- MariaDB ------------------------------------------------------------------------
    def start_mariadb(self, timeout: float) -> ManagedProcess:
        data = self.db_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        log = self.dir / "log"
        result = self._run(
            "mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
            "--auth-root-authentication-method=socket", "--skip-test-db",
        )  # fmt: skip
        if result != 0:
            raise RuntimeError(f"mariadb-install-db failed (exit {result}):\n{_tail(self._out)}")
        args = [
            "--no-defaults", f"--datadir={data}", f"--socket={self.db_socket}",
            f"--port={self.db_port}", "--bind-address=127.0.0.1", "--user=root",
            f"--pid-file={self.db_dir / 'mysqld.pid'}", f"--log-error={log / 'mariadb.log'}",
            "--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
            # MariaDB 11.4+ (trixie, forky) turns TLS on by default with a self-made
            # certificate; slurmdbd 24.11/26.05 then fail their first query ("5027 Number
            # of columns in result (=1) set execeeds maxmimum allowed", fatal). Loopback
            # needs no TLS; a site that wants it configures certificates both sides.
            "--skip-ssl",
            # slurmdbd's schema conversion holds locks for long on first start.
            "--innodb-lock-wait-timeout=900",
        ]  # fmt: skip
        db = ManagedProcess("mariadbd", self.release.argv("mariadbd", *args), log / "mariadbd.out")
        self.procs.append(db.start())

        def up() -> bool:
            if not db.alive():
                raise RuntimeError(f"mariadbd exited:\n{_tail(log / 'mariadb.log')}")
            return self.db_socket.exists() and port_open(self.db_port)

        wait_until(up, timeout, "mariadbd")
        sql = (
            f"CREATE USER '{STORAGE_USER}'@'127.0.0.1' IDENTIFIED BY '{self.password}';"
            f" GRANT ALL ON {DATABASE}.* TO '{STORAGE_USER}'@'127.0.0.1';"
        )
        rc = self._run(
            "mariadb", "--no-defaults", f"--socket={self.db_socket}", "--skip-ssl", "-uroot",
            "-e", sql,
        )  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"creating the slurmdbd database user failed (exit {rc})")
        return db

    # -- slurmdbd -----------------------------------------------------------------------
    def write_conf(self) -> Path:
        conf = self.dir / "etc" / "slurmdbd.conf"
        lines = [
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "DbdHost=localhost",
            "DbdAddr=127.0.0.1",
            f"DbdPort={self.dbd_port}",
            "SlurmUser=root",
            f"PidFile={self.dir / 'run' / 'slurmdbd.pid'}",
            f"LogFile={self.dir / 'log' / 'slurmdbd.log'}",
            "DebugLevel=info",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={self.db_port}",
            f"StorageUser={STORAGE_USER}",
            f"StoragePass={self.password}",
            f"StorageLoc={DATABASE}",
        ]
        if self.jwt_key is not None:
            # Without it slurmrestd's connection is dropped at its first message (its log:
            # "Failed to unpack SLURM_PERSIST_INIT message") and every /slurmdb/ call is a
            # 502 "Unable to connect to database".
            lines += ["AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={self.jwt_key}"]
        # slurmdbd refuses a config others can read (it holds the database password),
        # and one not owned by SlurmUser (root here).
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(conf, 0o600)
        return conf

    def start_slurmdbd(self, timeout: float) -> ManagedProcess:
        self.write_conf()
        dbd = ManagedProcess(
            "slurmdbd",
            self.release.argv("slurmdbd", "-D"),
            self.dir / "log" / "slurmdbd.out",
            env=self.env,
        )
        self.procs.append(dbd.start())

        def up() -> bool:
            if not dbd.alive():
                raise RuntimeError(f"slurmdbd exited:\n{_tail(self.dir / 'log' / 'slurmdbd.log')}")
            return port_open(self.dbd_port)

        # The first start creates the schema (a few seconds on a shared machine).
        wait_until(up, timeout, "slurmdbd")
        return dbd

    def sacctmgr(self, *args: str) -> None:
        rc = self._run("sacctmgr", "-i", *args, env=self.env)
        if rc != 0:
            raise RuntimeError(f"sacctmgr {' '.join(args)} failed (exit {rc}):\n{_tail(self._out)}")

    def add_associations(self, cluster: str, users: Sequence[str]) -> None:
        """The cluster, the lab's accounts and each user in every account (default: the
        first), so jobs carry accounts and ``AccountingStorageEnforce`` admits them."""
        self.sacctmgr("add", "cluster", cluster)
        self.sacctmgr("add", "account", ",".join(LAB_ACCOUNTS), f"cluster={cluster}")
        self.sacctmgr(
            "add", "user", ",".join(users), f"account={','.join(LAB_ACCOUNTS)}",
            f"defaultaccount={LAB_ACCOUNTS[0]}", f"cluster={cluster}",
        )  # fmt: skip

    @property
    def _out(self) -> Path:
        return self.dir / "log" / "accounting-setup.out"

    def _run(self, program: str, *args: str, env: dict[str, str] | None = None) -> int:
        import subprocess

        self._out.parent.mkdir(parents=True, exist_ok=True)
        with open(self._out, "ab") as out:
            return subprocess.run(
                self.release.argv(program, *args, cwd="/"),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, timeout=120, check=False,
            ).returncode  # fmt: skip


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
