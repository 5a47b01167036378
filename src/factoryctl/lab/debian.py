"""Debian releases for the lab: the host's own runs natively, the others from a chroot.

Sites run several generations of Slurm, Prometheus and VictoriaMetrics, and their JSON
and behaviour differ. Debian's mirror carries three generations (bookworm: Slurm 22.05,
trixie: 24.11, forky: 26.05), so the lab runs each release's real binaries: the host's
release from the host, every other one from a minbase ``debootstrap`` root that is built
once and cached (``$FACTORYCTL_LAB_CACHE``, else ``$XDG_CACHE_HOME/factoryctl/lab``).

A program of a chroot release runs as ``unshare --mount`` + ``chroot``: /proc, /dev and
/sys, and the host directories the lab shares with it (/tmp, where every lab directory
and pytest's tmp_path live), are mounted in a private mount namespace that dies with the
process. Nothing is ever left mounted on the host, even after ``kill -9``, and since the
process keeps the PID it was started with (each step ``exec``s), it is stopped by PID like
a native one. The network is the host's: daemons listen on 127.0.0.1 as native ones do.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The lab's generations, oldest first; the suite runs its Slurm and engine tests on each.
RELEASES = ("bookworm", "trixie", "forky")
# Everything the lab runs from a release: Slurm with slurmrestd and its JWT plugin, munge,
# slurmdbd with its MariaDB (accounting: sacct), and both engines (vmalert and promtool
# come with them).
PACKAGES = (
    "slurm-wlm",
    "slurmrestd",
    "slurm-wlm-jwt-plugin",
    "slurmdbd",
    "mariadb-server",
    "munge",
    "prometheus",
    "victoria-metrics",
)
# Host directories a chroot release sees at the same path. Lab directories are made under
# the system temp dir, so paths in configs mean the same file inside and outside; a
# cluster adds the directories of its Prolog/Epilog and whatever it is told to share.
SHARED = ("/tmp",)
_STAMP = ".factoryctl-lab.json"

# $1 is the root, $2 the working directory, then the shared directories up to "--", then
# the program and its arguments. Every step execs, so the program keeps this PID.
_ENTER = r"""
root=$1 cwd=$2; shift 2
mount -t proc proc "$root/proc" || exit 125
mount --rbind /dev "$root/dev" || exit 125
mount --rbind /sys "$root/sys" 2>/dev/null || true
while [ "$1" != "--" ]; do
  mkdir -p "$root$1" && mount --rbind "$1" "$root$1" || exit 125
  shift
done
shift
exec chroot "$root" /bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$cwd" "$@"
"""


class LabError(RuntimeError):
    """The lab cannot provide a release (no debootstrap, no mirror, apt failed)."""


def host_codename() -> str:
    """The host's Debian codename from /etc/os-release (``testing`` reads as its name)."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    return m.group(1) if m else ""


def cache_dir() -> Path:
    explicit = os.environ.get("FACTORYCTL_LAB_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "factoryctl" / "lab"


@dataclass(frozen=True)
class DebianRelease:
    """One release's programs. ``root`` is None for the host's own release."""

    codename: str
    root: Path | None = None
    shared: tuple[str, ...] = SHARED
    _versions: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def native(self) -> bool:
        return self.root is None

    def which(self, program: str) -> str | None:
        """The program's path (inside the root for a chroot release), or None."""
        if self.root is None:
            return shutil.which(program) or shutil.which(
                program, path="/usr/sbin:/usr/bin:/sbin:/bin"
            )
        for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            if os.access(f"{self.root}{d}/{program}", os.X_OK):
                return f"{d}/{program}"
        return None

    def has(self, *programs: str) -> bool:
        return all(self.which(p) for p in programs)

    def has_slurm_plugin(self, name: str) -> bool:
        """Whether this release has Slurm's plugin ``name`` (``auth_jwt``: it comes in its
        own package, slurm-wlm-jwt-plugin, which a host may lack)."""
        base = Path(str(self.root or "") + "/usr/lib")
        return any(base.glob(f"*/slurm-wlm/{name}.so")) or (base / "slurm" / f"{name}.so").exists()

    def argv(self, program: str, *args: str, cwd: str | None = None) -> list[str]:
        """The argv that runs ``program`` of this release; raises FileNotFoundError."""
        path = self.which(program)
        if path is None:
            where = "on PATH" if self.root is None else f"in {self.root}"
            raise FileNotFoundError(f"{program} not found {where}")
        if self.root is None:
            return [path, *args]
        return [
            *self.enter_prefix(cwd or os.getcwd()),
            path,
            *args,
        ]

    def enter_prefix(self, cwd: str = "/") -> list[str]:
        """What runs a command inside the root (before the command's own path)."""
        assert self.root is not None
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                _ENTER, "enter", str(self.root), cwd, *self.shared, "--"]  # fmt: skip

    def wrapper(self, program: str) -> str:
        """A shell script that runs ``program`` of this release with the caller's arguments,
        for putting a release's Slurm client first on another program's PATH."""
        path = self.which(program)
        if path is None:
            raise FileNotFoundError(f"{program} not found in release {self.codename}")
        if self.root is None:
            return f'#!/bin/sh\nexec {path} "$@"\n'
        prefix = " ".join(_sh_quote(a) for a in self.enter_prefix("PWD_PLACEHOLDER"))
        prefix = prefix.replace("PWD_PLACEHOLDER", '"$PWD"')
        return f'#!/bin/sh\nexec {prefix} {path} "$@"\n'

    def version(self, program: str, flag: str = "--version") -> str:
        """The first line a program prints for its version (cached)."""
        key = f"{program} {flag}"
        if key not in self._versions:
            out = subprocess.run(
                self.argv(program, flag, cwd="/"), capture_output=True, text=True, timeout=30
            )
            lines = (out.stdout or out.stderr).strip().splitlines()
            self._versions[key] = lines[0] if lines else ""
        return self._versions[key]

    def package_version(self, package: str) -> str:
        """The installed Debian package's version (``24.11.5-4+deb13u1``), or ''."""
        out = subprocess.run(
            self.argv("dpkg-query", "-W", "-f=${Version}", package, cwd="/"),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.stdout.strip() if out.returncode == 0 else ""

    def slurm_version(self) -> tuple[int, int]:
        """(major, minor) of this release's Slurm, e.g. (24, 11)."""
        m = re.search(r"(\d+)\.(\d+)", self.version("slurmctld", "-V"))
        if not m:
            raise LabError(f"cannot read slurmctld's version in {self.codename}")
        return int(m.group(1)), int(m.group(2))


def _sh_quote(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./=:-]+", text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def release(codename: str, *, build: bool = True, packages: Sequence[str] = PACKAGES,
            log: bool = True) -> DebianRelease:  # fmt: skip
    """The named release, building (or completing) its cached root first if ``build``.

    The host's release is the host: its packages are the host's (``./dev test`` installs
    them). Raises LabError when the root cannot be had; with ``build=False`` a root that
    is missing or lacks a package raises too, without touching the network."""
    if codename not in RELEASES:
        raise LabError(f"unknown release {codename!r}; the lab knows {', '.join(RELEASES)}")
    if codename == host_codename():
        return DebianRelease(codename)
    root = cache_dir() / codename
    want = sorted(set(packages))
    with _locked(cache_dir() / f"{codename}.lock"):
        have = _stamp(root)
        missing = [p for p in want if p not in have]
        if missing:
            if not build:
                raise LabError(
                    f"release {codename} is not built in {root} (missing: {', '.join(missing)});"
                    " run: python -m factoryctl.lab release " + codename
                )
            _build(codename, root, missing, have, log)
    return DebianRelease(codename, root)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Test sessions, helpers and a user may all ask for the same root at once.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _stamp(root: Path) -> list[str]:
    try:
        data = json.loads((root / _STAMP).read_text())
    except (OSError, ValueError):
        return []
    return list(data.get("packages", []))


def _say(log: bool, text: str) -> None:
    if log:
        print(f"lab: {text}", file=sys.stderr, flush=True)


def host_mirror() -> str:
    """The Debian mirror the host's apt uses (the site's own mirror, wherever it is)."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            texts.append(p.read_text())
    for text in texts:
        for m in re.finditer(
            r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+/debian)/?\s", text, re.M
        ):
            return m.group(1)
    raise LabError("no Debian mirror found in /etc/apt/sources.list{,.d}")


def _run(argv: Sequence[str], what: str) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise LabError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _build(codename: str, root: Path, missing: list[str], have: list[str], log: bool) -> None:
    if os.geteuid() != 0:
        raise LabError(f"building the {codename} root needs root (debootstrap, chroot)")
    if not (root / "usr" / "bin").is_dir() or not have:
        debootstrap = shutil.which("debootstrap") or shutil.which(
            "debootstrap", path="/usr/sbin:/usr/bin"
        )
        if debootstrap is None:
            raise LabError("debootstrap not found: apt-get install debootstrap")
        tmp = root.with_name(root.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        argv = [debootstrap, "--variant=minbase", codename, str(tmp), host_mirror()]
        # An older debootstrap has no script for a newer suite; sid's fits every new one.
        if not Path(f"/usr/share/debootstrap/scripts/{codename}").exists():
            argv.append("/usr/share/debootstrap/scripts/sid")
        _say(log, f"debootstrap {codename} into {root} (about 30 s, once)")
        _run(argv, f"debootstrap {codename}")
        # Daemons are started by the lab, never by package scripts; a frozen mirror's
        # Release files may be past their Valid-Until; names resolve as on the host.
        policy = tmp / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (tmp / "etc" / "apt" / "apt.conf.d" / "99factoryctl-lab").write_text(
            'Acquire::Check-Valid-Until "false";\n'
        )
        shutil.copy("/etc/hosts", tmp / "etc" / "hosts")
        tmp.rename(root)
        have = []
    _say(log, f"apt-get install in {codename}: {' '.join(missing)}")
    script = (
        "export DEBIAN_FRONTEND=noninteractive; dpkg --configure -a; apt-get update -qq && "
        "apt-get install -y -qq --no-install-recommends " + " ".join(missing)
    )
    for d in SHARED:
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # With /proc mounted (a private mount namespace, as the lab runs programs): some
    # packages' scripts need it (mariadb-server's postinst runs systemd-tmpfiles).
    enter = DebianRelease(codename, root).enter_prefix("/")
    _run([*enter, "/bin/sh", "-c", script], f"apt-get install in {codename}")
    (root / _STAMP).write_text(json.dumps({"packages": sorted({*have, *missing})}) + "\n")


def available(codename: str) -> DebianRelease | None:
    """The release if it can run here now (built root, or the host), else None."""
    try:
        return release(codename, build=False, log=False)
    except LabError:
        return None
