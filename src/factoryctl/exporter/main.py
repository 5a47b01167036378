"""``factoryctl-exporter``: the per-node GPU exporter's command line.

Startup checks everything that can be wrong before anything starts: flags, the web-config
file and its TLS files, the job-map directory's contents, the listen address, then NVML.
Each failure is one line on stderr and a distinct exit status (``ExitStatus``).
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
from prometheus_client.registry import CollectorRegistry

from factoryctl import __version__
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.exporter.attribution import Attributor, JobMapDir, ProcResolver
from factoryctl.exporter.backend import Backend
from factoryctl.exporter.collection import CollectionLoop, Exporter
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.null import WaitingForNvml
from factoryctl.exporter.server import DEFAULT_PORT, MetricsServer, stop_on_signals
from factoryctl.exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("factoryctl.exporter")
PROG = "factoryctl-exporter"


def short_hostname() -> str:
    """The scheduler's node name is the short hostname on nearly every Slurm site."""
    return socket.gethostname().split(".", 1)[0]


def register_collectors(registry: CollectorRegistry, exporter: Exporter) -> CollectorRegistry:
    from prometheus_client import ProcessCollector

    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds...
    return registry


def open_backend(
    simulate: int | None,
    node: str,
    allow_no_gpu: bool,
    seed: int,
    procs_per_gpu: int,
    xids: bool,
    slow_interval: float,
    sim_control: Path | None = None,
) -> Backend:
    if simulate is not None:
        from factoryctl.exporter.simulated import SimBackend

        return SimBackend.create(simulate, node, time.time(), seed, procs_per_gpu, sim_control)
    from factoryctl.exporter.nvml import Nvml, NvmlBackend, NvmlInitError

    def opener() -> Backend:
        return NvmlBackend(Nvml(), watch_xids=xids, slow_interval=slow_interval)

    try:
        return opener()
    except NvmlInitError as exc:
        if allow_no_gpu:
            log.warning("%s; serving self-metrics only, retrying every minute", exc)
            return WaitingForNvml(opener, last_try=time.time())
        raise FactoryctlError(
            f"{exc} (use --simulate N without a GPU, or --allow-no-gpu)", ExitStatus.NO_GPU
        ) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--listen",
    metavar="[HOST]:PORT",
    default=f":{DEFAULT_PORT}",
    show_default=True,
    help="Address to serve /metrics on.",
)
@click.option("--node-name", default=None, help="Node label (default: the short hostname).")
@click.option(
    "--collect-interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between collections.",
)
@click.option(
    "--energy-interval",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds between reads of the costly, slow-changing fields: the energy counter of "
    "a GPU whose job has not changed (a change of job reads it at once), MIG mode, PCIe replays.",
)
@click.option(
    "--simulate",
    type=click.IntRange(min=1, max=64),
    default=None,
    metavar="N",
    help="Serve N simulated GPUs instead of NVML.",
)
@click.option("--sim-seed", type=int, default=0, show_default=True, help="Seed of --simulate.")
@click.option(
    "--sim-processes-per-gpu",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Processes on each busy simulated GPU.",
)
@click.option(
    "--sim-control",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="With --simulate: take jobs ('jobs': JOB_ID USER training|inference|idle GPU[,GPU]) "
    "and XIDs ('xids': GPU CODE, append-only) from files in DIR instead of running "
    "simulated jobs; for tests and demos.",
)
@click.option(
    "--allow-no-gpu", is_flag=True, help="Without NVML, serve self-metrics instead of exiting."
)
@click.option(
    "--job-map-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory of GPU-index files listing job ids (dcgm-exporter's layout).",
)
@click.option(
    "--proc-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/proc"),
    show_default=True,
    help="Where to read /proc from (containers mount the host's /proc elsewhere).",
)
@click.option(
    "--job-grace",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds a finished job's counters stay exported.",
)
@click.option(
    "--web-config",
    "web_config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Prometheus web-config file (TLS, basic auth).",
)
@click.option("--no-xid-events", is_flag=True, help="Do not watch NVML XID events.")
@click.option(
    "--no-process-metrics",
    is_flag=True,
    help="Do not export one series per GPU process (pid, command name, user and job as "
    "labels), for sites whose policy forbids them; the per-GPU process totals stay.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.version_option(__version__, prog_name=PROG)
def cli(
    listen: str,
    node_name: str | None,
    collect_interval: float,
    energy_interval: float,
    simulate: int | None,
    sim_seed: int,
    sim_processes_per_gpu: int,
    sim_control: Path | None,
    allow_no_gpu: bool,
    job_map_dir: Path | None,
    proc_root: Path,
    job_grace: float,
    web_config_path: Path | None,
    no_xid_events: bool,
    no_process_metrics: bool,
    log_level: str,
) -> None:
    """Per-node GPU telemetry, GPU->job attribution and per-job energy for Prometheus."""
    logging.getLogger().setLevel(log_level.upper())
    node = node_name or short_hostname()
    if sim_control is not None and simulate is None:
        raise click.UsageError("--sim-control needs --simulate N")
    web = load_web_config(web_config_path) if web_config_path is not None else WebConfig()
    map_dir = JobMapDir(job_map_dir) if job_map_dir is not None else None
    if map_dir is not None:
        map_dir.validate()
    serve(
        listen,
        node,
        collect_interval,
        web,
        Attributor(map_dir, ProcResolver(proc_root)),
        job_grace,
        energy_interval,
        lambda: open_backend(
            simulate,
            node,
            allow_no_gpu,
            sim_seed,
            sim_processes_per_gpu,
            not no_xid_events,
            energy_interval,
            sim_control,
        ),
        process_metrics=not no_process_metrics,
    )


def serve(
    listen: str,
    node: str,
    interval: float,
    web: WebConfig,
    attributor: Attributor,
    grace: float,
    energy_interval: float,
    backend_factory: Callable[[], Backend],
    process_metrics: bool = True,
) -> None:
    # Bind before touching NVML: a taken port fails fast and leaves the GPU untouched.
    registry = CollectorRegistry(auto_describe=False)
    server = MetricsServer(registry, listen, web)
    try:
        backend = backend_factory()
    except BaseException:
        server.stop()
        raise
    exporter = Exporter(
        backend,
        node,
        attributor,
        grace_seconds=grace,
        energy_interval=energy_interval,
        process_metrics=process_metrics,
    )
    register_collectors(registry, exporter)
    exporter.collect_once()  # the first scrape already has GPUs in it
    loop = CollectionLoop(exporter, interval)
    stop = stop_on_signals()
    loop.start()
    server.start()
    log.info(
        "serving %s on %s://%s:%d/metrics (node %s, backend %s, %d GPUs)",
        __version__,
        server.scheme,
        listen.rpartition(":")[0] or "*",
        server.port,
        node,
        backend.name,
        len(exporter.snapshot.readings),
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        log.info("shutting down")
        server.stop()
        loop.stop()
        backend.close()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        stream=sys.stderr, format=f"{PROG}: %(levelname)s: %(message)s", level=logging.INFO
    )
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False
        )
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.UsageError as exc:
        print(f"{PROG}: error: {exc.format_message()}", file=sys.stderr)
        return int(ExitStatus.USAGE)
    except click.Abort:
        return int(ExitStatus.INTERRUPTED)
    except FactoryctlError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        return int(exc.status)
    return int(ExitStatus.OK)


if __name__ == "__main__":
    sys.exit(main())
