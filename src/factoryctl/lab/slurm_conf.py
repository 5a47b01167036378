"""The files of a lab Slurm cluster: munge key, JWT key, fake GPU devices, slurm.conf,
gres.conf and the RebootProgram, all inside one directory, with ports from the kernel.

Daemons and clients authenticate with munge; JWT is the alternative type (``AuthAltTypes``)
that slurmrestd's ``rest_auth/jwt`` needs and ``scontrol token`` issues, as at a site that
offers slurmrestd over TCP."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

import hostlist

from factoryctl.lab.procs import free_port

NVIDIA_MAJOR = 195

# RebootProgram: slurmd runs it. Up to 24.11 it inherits slurmd's environment, which
# names the node; 26.05 runs it as a "power action" with SLURM_NODE_NAME alone, so the
# cluster's directory and config are written into the script. It "reboots" the node by
# restarting that node's slurmd with -b, which makes slurmd report the node as rebooted.
# The restart is detached (its own session) because it kills the slurmd that is running
# this script, and carries FACTORYCTL_LAB_DIR so the cluster's stop() finds it by its
# environment.
REBOOT_SCRIPT = """#!/bin/sh
node="${FACTORYCTL_LAB_NODE:-$SLURM_NODE_NAME}"
dir="${FACTORYCTL_LAB_DIR:-@DIR@}"
[ -n "$node" ] && [ -d "$dir" ] || exit 1
export FACTORYCTL_LAB_DIR="$dir" FACTORYCTL_LAB_NODE="$node" SLURM_CONF="$dir/etc/slurm.conf"
export PATH="${PATH:-/usr/sbin:/usr/bin:/sbin:/bin}:/usr/sbin:/usr/bin"
echo "$(date +%s) reboot $node" >> "$dir/log/reboots.log"
ready="$dir/run/restart-$node.ready"
rm -f "$ready"
setsid sh -c '
  : > "$0/run/restart-$1.ready"
  sleep 1
  old=$(cat "$0/run/slurmd-$1.pid" 2>/dev/null)
  [ -n "$old" ] && kill "$old" 2>/dev/null
  i=0
  while [ -n "$old" ] && kill -0 "$old" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  exec slurmd -D -b -N "$1" >> "$0/log/slurmd-$1.out" 2>&1
' "$dir" "$node" < /dev/null > /dev/null 2>&1 &
echo $! > "$dir/run/restart-$node.pid"
# 26.05 kills the power action's process group as soon as this script exits: wait until
# the restart has left it (its own session) before exiting.
i=0
while [ ! -e "$ready" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
exit 0
"""


def write_lab_files(
    d: Path,
    *,
    munge_socket: Path,
    node_names: Sequence[str],
    live_nodes: Sequence[str],
    gpus_per_node: int,
    cpus_per_node: int,
    prolog: str | None = None,
    epilog: str | None = None,
    extra_conf: Sequence[str] = (),
    slurm_version: tuple[int, int] = (22, 5),
    jwt: bool = True,
) -> int:
    """Write everything; returns the SlurmctldPort chosen. Nodes not in ``live_nodes``
    get no slurmd (and a dummy port): they exist for slurmctld only and read DOWN. ``jwt``
    adds auth/jwt as the alternative auth type (the release must have its plugin)."""
    live = set(live_nodes)
    for sub in ("etc", "munge", "state", "run", "log", "dev", "tmp", "spool"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    os.chmod(d / "munge", 0o755)  # munged insists on a non-writable-by-others dir
    key = d / "etc" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o600)
    # HS256 key: read by slurmctld only (SlurmUser=root), never by slurmrestd.
    jwt_key = d / "etc" / "jwt.key"
    jwt_key.write_bytes(secrets.token_bytes(32))
    os.chmod(jwt_key, 0o600)
    for i in range(gpus_per_node):
        dev = d / "dev" / f"nvidia{i}"
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(NVIDIA_MAJOR, i))
        os.chmod(dev, 0o666)
    for name in live:
        (d / "spool" / name).mkdir(exist_ok=True)
    reboot = d / "etc" / "reboot.sh"
    reboot.write_text(REBOOT_SCRIPT.replace("@DIR@", str(d)))
    os.chmod(reboot, 0o755)
    (d / "etc" / "plugstack.conf").write_text("")
    # Read from beside slurm.conf. 23.02 and later refuse to start slurmd without one and
    # would try cgroup v2 under the lab's shared /sys; the lab tracks jobs by /proc instead.
    if slurm_version >= (23, 2):
        (d / "etc" / "cgroup.conf").write_text("CgroupPlugin=disabled\n")
    ctld_port = free_port()
    conf = [
        f"ClusterName=fctl{secrets.token_hex(3)}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={d / 'state'}",
        f"SlurmdSpoolDir={d / 'spool' / '%n'}",
        f"SlurmctldPidFile={d / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={d / 'run' / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={d / 'log' / 'slurmd-%n.log'}",
        f"PlugStackConfig={d / 'etc' / 'plugstack.conf'}",
        f"TmpFS={d / 'tmp'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SlurmdParameters=config_overrides",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={d / 'log' / 'jobcomp.txt'}",
        "ReturnToService=2",
        "MailProg=/bin/true",
        "MpiDefault=none",
        "GresTypes=gpu",
        f"RebootProgram={reboot}",
        "ResumeTimeout=60",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=300",
        "MinJobAge=30",
        "SchedulerParameters=sched_interval=2",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
    ]
    # extra_conf may name slurmdbd (an accounting cluster); a key given twice is ambiguous.
    if not any(line.startswith("AccountingStorageType=") for line in extra_conf):
        conf.append("AccountingStorageType=accounting_storage/none")
    if jwt:
        conf += ["AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={jwt_key}"]
    if prolog:
        conf.append(f"Prolog={prolog}")
    if epilog:
        conf.append(f"Epilog={epilog}")
    conf.extend(extra_conf)
    mem = 64000
    hardware = f"CPUs={cpus_per_node} RealMemory={mem} Gres=gpu:{gpus_per_node} State=UNKNOWN"
    for name in (n for n in node_names if n in live):
        conf.append(
            f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={free_port()} "
            + hardware
        )
    dead = [n for n in node_names if n not in live]
    if dead:
        # One hostlist line, as a site declares its racks: every Slurm client parses
        # slurm.conf, and 12,500 lines of it cost each sinfo/scontrol 0.6 s of CPU.
        # DOWN from the start: left UNKNOWN they read idle until SlurmdTimeout, and the
        # scheduler would start jobs on nodes that have no slurmd.
        conf.append(
            f"NodeName={hostlist.collect_hostlist(dead)} NodeHostname=localhost"
            f" NodeAddr=127.0.0.1 Port=1 {hardware.replace('UNKNOWN', 'DOWN')}"
            ' Reason="no slurmd (lab)"'
        )
    conf.append("PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    (d / "etc" / "slurm.conf").write_text("\n".join(conf) + "\n")
    last = gpus_per_node - 1
    devices = d / "dev" / (f"nvidia[0-{last}]" if last > 0 else "nvidia0")
    (d / "etc" / "gres.conf").write_text(f"Name=gpu File={devices}\n")
    return ctld_port
