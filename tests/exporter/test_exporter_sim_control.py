"""``--sim-control DIR``: a simulated node's jobs and XIDs, driven from files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from factoryctl.exporter.attribution import Attributor, JobMapDir, ProcResolver
from factoryctl.exporter.collection import Exporter
from factoryctl.exporter.main import main
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.sim_control import SimControl, parse_jobs, parse_xids
from factoryctl.exporter.simulated import SimBackend
from factoryctl.sim import Workload


def controlled(tmp_path: Path, map_dir: JobMapDir | None = None):
    control = tmp_path / "control"
    control.mkdir()
    backend = SimBackend.create(4, "n1", start_time=1000.0, control_dir=control)
    backend.follow_clock = False
    exporter = Exporter(backend, "n1", Attributor(map_dir, ProcResolver(tmp_path / "proc")))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    return control, backend, exporter, registry


def job_info(reg: CollectorRegistry, gpu: int, job: str, user: str) -> float | None:
    return reg.get_sample_value(
        "factoryctl_gpu_job_info",
        {
            "node": "n1",
            "gpu": str(gpu),
            "uuid": _uuid(reg, gpu),
            "job_id": job,
            "user": user,
        },
    )


def _uuid(reg: CollectorRegistry, gpu: int) -> str:
    for metric in reg.collect():
        for s in metric.samples:
            if s.name == "factoryctl_gpu_up" and s.labels["gpu"] == str(gpu):
                return s.labels["uuid"]
    raise AssertionError(f"no GPU {gpu}")


def util(reg: CollectorRegistry, gpu: int) -> float | None:
    labels = {"node": "n1", "gpu": str(gpu), "uuid": _uuid(reg, gpu)}
    return reg.get_sample_value("factoryctl_gpu_utilization_ratio", labels)


def test_jobs_from_the_file_start_run_their_workload_and_end(tmp_path: Path) -> None:
    control, backend, exporter, reg = controlled(tmp_path)
    exporter.collect_once(backend.sim.now)
    assert backend.sim.jobs == {}  # no simulated jobs of its own
    (control / "jobs").write_text("# id user workload gpus\n601 ada training 2\n602 bob idle 0,1\n")
    for _ in range(5):
        backend.sim.advance(1.0)
        exporter.collect_once(backend.sim.now)
    assert job_info(reg, 2, "601", "ada") == 1
    assert job_info(reg, 0, "602", "bob") == job_info(reg, 1, "602", "bob") == 1
    assert util(reg, 2) is not None and util(reg, 2) > 0.5  # type: ignore[operator]
    assert util(reg, 0) == 0.0 and util(reg, 1) == 0.0  # the idle job does nothing
    assert backend.sim.jobs["602"].workload is Workload.IDLE
    (control / "jobs").write_text("601 ada training 2\n")
    backend.sim.advance(1.0)
    exporter.collect_once(backend.sim.now)
    assert "602" not in backend.sim.jobs
    assert job_info(reg, 0, "602", "bob") is None


def test_an_appended_xid_79_is_injected_once_and_the_job_stays_named(tmp_path: Path) -> None:
    control, backend, exporter, reg = controlled(tmp_path)
    (control / "jobs").write_text("601 ada training 2\n")
    exporter.collect_once(backend.sim.now)
    uuid = _uuid(reg, 2)
    (control / "xids").write_text("2 79\n")
    for _ in range(3):  # read three times: still one event
        backend.sim.advance(1.0)
        exporter.collect_once(backend.sim.now)
    ids = {"node": "n1", "gpu": "2", "uuid": uuid}
    assert reg.get_sample_value("factoryctl_gpu_xid_errors_total", {**ids, "xid": "79"}) == 1
    assert reg.get_sample_value("factoryctl_gpu_up", ids) == 0
    # The simulator's job died with the GPU, but the scheduler (the file) still has it there.
    assert "601" not in backend.sim.jobs
    assert job_info(reg, 2, "601", "ada") == 1
    with open(control / "xids", "a") as f:
        f.write("1 31\n")
    exporter.collect_once(backend.sim.now)
    labels = {"node": "n1", "gpu": "1", "uuid": _uuid(reg, 1), "xid": "31"}
    assert reg.get_sample_value("factoryctl_gpu_xid_errors_total", labels) == 1


def test_a_lost_gpu_keeps_the_job_from_the_map_dir(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "2").write_text("777\n")
    control, backend, exporter, reg = controlled(tmp_path, JobMapDir(maps))
    (control / "xids").write_text("2 79\n")
    exporter.collect_once(backend.sim.now)
    assert job_info(reg, 2, "777", "") == 1


def test_malformed_lines_are_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "jobs").write_text("601 ada training 2\n602 bob sleeping 0\n603 cy idle 9\nbad\n")
    jobs, bad = parse_jobs(tmp_path / "jobs", gpus=4)
    assert list(jobs) == ["601"] and len(bad) == 3
    (tmp_path / "xids").write_text("2 79\nnine 79\n7 79\n")
    events, bad = parse_xids(tmp_path / "xids", gpus=4)
    assert events == [(2, 79)] and len(bad) == 2
    control = SimControl(tmp_path)
    backend = SimBackend.create(4, "n1", start_time=0.0, control_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="factoryctl.exporter"):
        control.apply(backend.sim, "n1")
        control.apply(backend.sim, "n1")
    assert len([r for r in caplog.records if "line ignored" in r.message]) == 5


def test_sim_control_needs_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sim-control", str(tmp_path), "--listen", "127.0.0.1:0"]) == 2
    assert "--sim-control needs --simulate" in capsys.readouterr().err
