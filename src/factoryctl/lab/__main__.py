"""``python -m factoryctl.lab up|down|status``: the real telemetry stack on 127.0.0.1.

``up`` starts N simulated exporters (``factoryctl-exporter --simulate``, or scrapes the
exporters given with ``--targets``), then Prometheus and VictoriaMetrics scraping them,
each on a free port, records every PID in ``STATE/pids`` and prints the URLs. ``down``
stops exactly those PIDs. Nothing is left running that ``down`` does not know about.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import shutil
import sys
from pathlib import Path

from factoryctl.lab.procs import ManagedProcess, free_port, port_open, wait_until
from factoryctl.lab.stack import ENGINES, Stack, start_scheduler_exporter, stop_from_pidfile

DEFAULT_STATE = Path(".lab/telemetry")
# {port}, {node}, {gpus} and {seed} are filled in per exporter.
DEFAULT_EXPORTER = (
    "factoryctl-exporter --simulate {gpus} --listen 127.0.0.1:{port} --node-name {node}"
    " --sim-seed {seed}"
)


def _exporters(args: argparse.Namespace, state: Path) -> tuple[list[str], list[ManagedProcess]]:
    if args.targets:
        return [t.strip() for t in args.targets.split(",") if t.strip()], []
    argv0 = shlex.split(args.exporter_cmd)[0]
    # A venv's scripts sit beside its python, whether or not the venv is on PATH.
    beside = Path(sys.executable).parent / argv0
    if shutil.which(argv0) is None and beside.exists():
        args.exporter_cmd = args.exporter_cmd.replace(argv0, shlex.quote(str(beside)), 1)
    elif shutil.which(argv0) is None:
        raise SystemExit(
            f"lab: {argv0} not found; install factoryctl, pass --exporter-cmd, or scrape running"
            " exporters with --targets HOST:PORT,..."
        )
    targets, procs = [], []
    for i in range(args.exporters):
        port = free_port()
        node = f"{args.prefix}{i + 1:03d}"
        cmd = args.exporter_cmd.format(port=port, node=node, gpus=args.gpus, seed=args.seed + i)
        proc = ManagedProcess(f"exporter-{node}", shlex.split(cmd), state / f"{node}.log").start()
        procs.append(proc)
        targets.append(f"127.0.0.1:{port}")
    for proc, target in zip(procs, targets, strict=True):
        port = int(target.rsplit(":", 1)[1])
        wait_until(functools.partial(port_open, port), 30, f"{proc.name} on {target}")
    return targets, procs


def up(args: argparse.Namespace) -> int:
    state = Path(args.state)
    if (state / "pids").exists():
        print(f"lab: already up (see {state / 'pids'}); run: python -m factoryctl.lab down")
        return 1
    state.mkdir(parents=True, exist_ok=True)
    targets, procs = _exporters(args, state)
    scheduler_targets: list[str] = []
    if args.scheduler_view != "none":
        # `factoryctl scheduler-exporter`, scraped as job factoryctl-scheduler (the rules' name).
        view = ["--demo"] if args.scheduler_view == "demo" else ["--scheduler", args.scheduler_view]
        target, proc = start_scheduler_exporter(state, view)
        scheduler_targets.append(target)
        procs.append(proc)
    rules = (
        sorted(str(p.resolve()) for p in Path(args.rules).glob("*.rules.yml")) if args.rules else []
    )
    stack = Stack(
        state,
        targets,
        args.engines.split(","),
        scrape_interval=args.interval,
        scheduler_targets=scheduler_targets,
        rule_files=rules,
    )
    try:
        stack.start()
        stack.wait_scraped(timeout=60)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    with open(state / "pids", "a") as pids:
        for proc in procs:
            pids.write(f"{proc.name} {proc.pid} -\n")
    for name, url in stack.urls().items():
        print(f"{name:16} {url}")
    first = next(iter(stack.urls().values()))
    print(f"\ntry:  factoryctl --prometheus {first} nodes\nstop: python -m factoryctl.lab down")
    return 0


def down(args: argparse.Namespace) -> int:
    stopped = stop_from_pidfile(Path(args.state))
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def status(args: argparse.Namespace) -> int:
    pidfile = Path(args.state) / "pids"
    if not pidfile.exists():
        print("lab: down")
        return 1
    print(pidfile.read_text().rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factoryctl.lab", description=__doc__)
    parser.add_argument("--state", default=str(DEFAULT_STATE), help="state directory")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start exporters, Prometheus and VictoriaMetrics")
    p_up.add_argument("--exporters", type=int, default=4, help="simulated nodes (default 4)")
    p_up.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    p_up.add_argument("--seed", type=int, default=0)
    p_up.add_argument("--prefix", default="gpu", help="node name prefix")
    p_up.add_argument("--interval", default="5s", help="scrape interval (default 5s)")
    p_up.add_argument("--engines", default=",".join(ENGINES))
    p_up.add_argument("--targets", help="scrape these HOST:PORT exporters instead")
    p_up.add_argument("--exporter-cmd", default=DEFAULT_EXPORTER, help="exporter command template")
    p_up.add_argument(
        "--scheduler-view",
        choices=["none", "demo", "slurm", "slurmrestd"],
        default="none",
        help="also run `factoryctl scheduler-exporter` on this scheduler (job factoryctl-scheduler)",
    )
    p_up.add_argument(
        "--rules",
        metavar="DIR",
        help="Prometheus evaluates the *.rules.yml in DIR (e.g. dashboards/prometheus)",
    )
    sub.add_parser("down", help="stop everything `up` started, by PID")
    sub.add_parser("status", help="what is running")
    p_rel = sub.add_parser(
        "releases",
        help="build (once) and list the Debian releases the lab runs Slurm and the engines of",
    )
    p_rel.add_argument("codenames", nargs="*", help="default: every release the lab knows")
    p_rel.add_argument("--check", action="store_true", help="list only, build nothing")
    args = parser.parse_args(argv)
    commands = {"up": up, "down": down, "status": status, "releases": releases}
    return commands[args.command](args)


def releases(args: argparse.Namespace) -> int:
    """``releases [CODENAME...]``: each release's root built or completed, then its versions.

    The host's own release is the host (``./dev test`` installs its packages); the others
    are debootstrap roots under ``$FACTORYCTL_LAB_CACHE`` (``~/.cache/factoryctl/lab``)."""
    from factoryctl.lab import debian

    status = 0
    for codename in args.codenames or debian.RELEASES:
        try:
            rel = debian.release(codename, build=not args.check)
        except debian.LabError as err:
            print(f"lab: {codename}: {err}", file=sys.stderr)
            status = 1
            continue
        where = "host" if rel.native else str(rel.root)
        versions = ", ".join(
            f"{p} {rel.package_version(p) or 'missing'}"
            for p in ("slurm-wlm", "prometheus", "victoria-metrics")
        )
        print(f"{codename}: {where}: {versions}")
    return status


if __name__ == "__main__":
    sys.exit(main())
