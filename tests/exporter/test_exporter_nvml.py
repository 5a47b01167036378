"""The NVML backend against a fake NVML: units, absent fields, lost GPUs, errors, XIDs."""

from __future__ import annotations

import time

import pytest
from exporter_fakes import GPU_IS_LOST, NO_PERMISSION, UNKNOWN, FakeGpu, FakeNvml
from prometheus_client import CollectorRegistry

from factoryctl.exporter.attribution import Attributor, ProcResolver
from factoryctl.exporter.collection import Exporter
from factoryctl.exporter.metrics import SnapshotCollector
from factoryctl.exporter.nvml import Nvml, NvmlBackend, NvmlInitError
from factoryctl.lab.procs import wait_until


def make(gpus: list[FakeGpu], tmp_path, watch_xids: bool = False):
    fake = FakeNvml(gpus)
    backend = NvmlBackend(Nvml(fake), watch_xids=watch_xids, slow_interval=0)
    exporter = Exporter(backend, "gpu001", Attributor(None, ProcResolver(tmp_path / "proc")))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    return fake, backend, exporter, registry


def labels(i: int, uuid: str, **extra: str) -> dict[str, str]:
    return {"node": "gpu001", "gpu": str(i), "uuid": uuid, **extra}


def test_readings_are_in_base_units(tmp_path):
    _fake, _backend, exporter, reg = make([FakeGpu("GPU-a", procs=[(11, 2**30)])], tmp_path)
    exporter.collect_once(1000.0)
    g = labels(0, "GPU-a")
    v = reg.get_sample_value
    assert v("factoryctl_gpu_up", g) == 1
    assert v("factoryctl_gpu_utilization_ratio", g) == pytest.approx(0.87)
    assert v("factoryctl_gpu_memory_bandwidth_utilization_ratio", g) == pytest.approx(0.41)
    assert v("factoryctl_gpu_memory_used_bytes", g) == 40 * 1024**3
    assert v("factoryctl_gpu_power_watts", g) == pytest.approx(612.345)
    assert v("factoryctl_gpu_power_limit_watts", g) == 700.0
    assert v("factoryctl_gpu_energy_joules_total", g) == pytest.approx(123_456.789)
    assert v("factoryctl_gpu_temperature_celsius", g) == 64
    assert v("factoryctl_gpu_memory_temperature_celsius", g) == 71
    assert v("factoryctl_gpu_sm_clock_hertz", g) == 1.98e9
    assert v("factoryctl_gpu_memory_clock_hertz", g) == 2.619e9
    assert v("factoryctl_gpu_clock_event_active", {**g, "reason": "sw_power_cap"}) == 1
    assert v("factoryctl_gpu_clock_event_active", {**g, "reason": "hw_slowdown"}) == 0
    assert v("factoryctl_gpu_ecc_errors_total", {**g, "type": "corrected"}) == 5
    assert v("factoryctl_gpu_remapped_rows_total", {**g, "cause": "uncorrectable"}) == 1
    assert v("factoryctl_gpu_row_remap_failure", g) == 0
    assert v("factoryctl_gpu_pcie_replays_total", g) == 3
    assert v("factoryctl_gpu_processes", g) == 1
    assert v("factoryctl_gpu_process_memory_bytes", g) == 2**30
    info = {
        **g,
        "model": "NVIDIA H100 80GB HBM3",
        "driver_version": "580.159.04",
        "pci_bus_id": "00000000:18:00.0",
        "serial": "1650000000",
        "mig_mode": "disabled",
    }
    assert v("factoryctl_gpu_info", info) == 1
    assert v("factoryctl_exporter_build_info", {"version": "0.1.0", "backend": "nvml"}) == 1


def test_unsupported_field_is_absent_not_an_error(tmp_path):
    gpu = FakeGpu(
        "GPU-a",
        unsupported={
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetRemappedRows",
            "nvmlDeviceGetCurrentClocksEventReasons",
        },
        reasons=0x40,
    )
    _, _, exporter, reg = make([gpu], tmp_path)
    exporter.collect_once(1.0)
    g = labels(0, "GPU-a")
    assert reg.get_sample_value("factoryctl_gpu_up", g) == 1
    assert reg.get_sample_value("factoryctl_gpu_energy_joules_total", g) is None
    assert (
        reg.get_sample_value("factoryctl_gpu_remapped_rows_total", {**g, "cause": "correctable"})
        is None
    )
    assert reg.get_sample_value("factoryctl_gpu_power_watts", g) == pytest.approx(612.345)
    # old drivers: the "throttle" spelling of the same bitmask
    assert (
        reg.get_sample_value(
            "factoryctl_gpu_clock_event_active", {**g, "reason": "hw_thermal_slowdown"}
        )
        == 1
    )
    assert (
        reg.get_sample_value(
            "factoryctl_exporter_nvml_errors_total", {"call": "nvmlDeviceGetRemappedRows"}
        )
        is None
    )


@pytest.mark.parametrize("code", [GPU_IS_LOST, UNKNOWN])
def test_lost_gpu_is_down_and_the_others_keep_reporting(tmp_path, code):
    gpus = [FakeGpu("GPU-a"), FakeGpu("GPU-b"), FakeGpu("GPU-c")]
    _fake, _, exporter, reg = make(gpus, tmp_path)
    exporter.collect_once(1.0)
    gpus[1].errors["nvmlDeviceGetUtilizationRates"] = code
    exporter.collect_once(2.0)
    assert reg.get_sample_value("factoryctl_gpu_up", labels(1, "GPU-b")) == 0
    assert reg.get_sample_value("factoryctl_gpu_power_watts", labels(1, "GPU-b")) is None
    for i, uuid in [(0, "GPU-a"), (2, "GPU-c")]:
        assert reg.get_sample_value("factoryctl_gpu_up", labels(i, uuid)) == 1
        assert reg.get_sample_value("factoryctl_gpu_power_watts", labels(i, uuid)) is not None
    assert (
        reg.get_sample_value(
            "factoryctl_exporter_nvml_errors_total", {"call": "nvmlDeviceGetUtilizationRates"}
        )
        == 1
    )
    # It comes back: the next good collection reports it up again.
    del gpus[1].errors["nvmlDeviceGetUtilizationRates"]
    exporter.collect_once(3.0)
    assert reg.get_sample_value("factoryctl_gpu_up", labels(1, "GPU-b")) == 1


def test_other_errors_leave_the_field_absent_and_are_counted(tmp_path):
    gpus = [FakeGpu("GPU-a", errors={"nvmlDeviceGetPcieReplayCounter": NO_PERMISSION})]
    _, _, exporter, reg = make(gpus, tmp_path)
    exporter.collect_once(1.0)
    exporter.collect_once(2.0)
    g = labels(0, "GPU-a")
    assert reg.get_sample_value("factoryctl_gpu_up", g) == 1
    assert reg.get_sample_value("factoryctl_gpu_pcie_replays_total", g) is None
    assert (
        reg.get_sample_value(
            "factoryctl_exporter_nvml_errors_total", {"call": "nvmlDeviceGetPcieReplayCounter"}
        )
        == 2
    )


def test_energy_counter_reset_never_goes_backwards(tmp_path):
    gpus = [FakeGpu("GPU-a", energy_mj=5_000_000)]
    _, _, exporter, reg = make(gpus, tmp_path)
    g = labels(0, "GPU-a")
    exporter.collect_once(1.0)
    gpus[0].energy_mj = 6_000_000
    exporter.collect_once(2.0)
    assert reg.get_sample_value("factoryctl_gpu_energy_joules_total", g) == pytest.approx(6000)
    gpus[0].energy_mj = 250_000  # driver reload: the device counter restarted
    exporter.collect_once(3.0)
    assert reg.get_sample_value("factoryctl_gpu_energy_joules_total", g) == pytest.approx(6250)


def test_init_failure_is_a_clear_error():
    with pytest.raises(NvmlInitError, match="NVML failed to initialise"):
        NvmlBackend(Nvml(FakeNvml([], init_error=9)))  # DRIVER_NOT_LOADED


def test_xid_events_are_counted_per_code_with_repeats(tmp_path):
    fake, backend, exporter, reg = make([FakeGpu("GPU-a"), FakeGpu("GPU-b")], tmp_path, True)
    try:
        assert backend.watcher is not None
        wait_until(backend.watcher.ready.is_set, 5, "the XID thread")
        before = time.time()
        for gpu, xid in [(1, 79), (1, 79), (1, 13), (0, 48)]:
            fake.events.put((gpu, xid))
        wait_until(lambda: fake.events.empty(), 5, "XID events consumed")
        wait_until(
            lambda: sum(c for x in backend.xids().values() for c in x.counts.values()) == 4,
            5,
            "4 XIDs tallied",
        )
        exporter.collect_once(10.0)
        b = labels(1, "GPU-b")
        assert reg.get_sample_value("factoryctl_gpu_xid_errors_total", {**b, "xid": "79"}) == 2
        assert reg.get_sample_value("factoryctl_gpu_xid_errors_total", {**b, "xid": "13"}) == 1
        a = labels(0, "GPU-a")
        assert reg.get_sample_value("factoryctl_gpu_xid_errors_total", {**a, "xid": "48"}) == 1
        assert reg.get_sample_value("factoryctl_gpu_last_xid_timestamp_seconds", b) >= before
    finally:
        backend.close()
    assert backend.watcher is not None and not backend.watcher.is_alive()


def test_a_scrape_never_calls_nvml(tmp_path):
    fake, _, exporter, reg = make([FakeGpu("GPU-a")], tmp_path)
    exporter.collect_once(1.0)
    calls = len(fake.calls)
    from prometheus_client import generate_latest

    for _ in range(5):
        generate_latest(reg)
    assert len(fake.calls) == calls


def test_slow_fields_are_read_at_their_own_cadence(tmp_path):
    fake = FakeNvml([FakeGpu("GPU-a", replays=1)])
    backend = NvmlBackend(Nvml(fake), watch_xids=False, slow_interval=1e9)
    exporter = Exporter(backend, "gpu001", Attributor(None, ProcResolver(tmp_path)))
    for t in range(5):
        exporter.collect_once(float(t))
    assert fake.calls.count("nvmlDeviceGetMigMode") == 1
    assert fake.calls.count("nvmlDeviceGetPcieReplayCounter") == 1
    assert fake.calls.count("nvmlDeviceGetPowerUsage") == 5
    assert exporter.snapshot.readings[0].pcie_replays == 1


def test_allow_no_gpu_picks_nvml_up_once_it_starts(tmp_path):
    from factoryctl.exporter.null import WaitingForNvml

    fake = FakeNvml([FakeGpu("GPU-a")], init_error=9)  # driver not loaded yet
    backend = WaitingForNvml(
        lambda: NvmlBackend(Nvml(fake), watch_xids=False), retry_seconds=60, last_try=0.0
    )
    exporter = Exporter(backend, "gpu001", Attributor(None, ProcResolver(tmp_path)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: exporter.snapshot))
    build = "factoryctl_exporter_build_info"
    exporter.collect_once(30.0)
    assert registry.get_sample_value(build, {"version": "0.1.0", "backend": "none"}) == 1
    fake.init_error = None  # the driver loads
    exporter.collect_once(59.0)  # not yet time to retry
    assert registry.get_sample_value("factoryctl_gpu_up", labels(0, "GPU-a")) is None
    exporter.collect_once(60.0)
    assert registry.get_sample_value("factoryctl_gpu_up", labels(0, "GPU-a")) == 1
    assert registry.get_sample_value(build, {"version": "0.1.0", "backend": "nvml"}) == 1
    backend.close()
    assert not fake.initialised


def test_slurm_25_11_uuids_attribute_idle_gpus_and_count_strangers(tmp_path):
    """Job 77's process runs on GPU 0; CUDA_VISIBLE_DEVICES holds UUIDs (Slurm 25.11+):
    GPU 1 (idle) is the job's too; a UUID of no GPU here is a job-map error, not a guess."""
    from exporter_fakes import make_proc

    env = {
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_USER": "ada",
        "CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b,GPU-elsewhere",
    }
    make_proc(tmp_path / "proc", 11, "0::/system.slice/slurmstepd.scope/job_77/step_0\n", env)
    gpus = [FakeGpu("GPU-a", procs=[(11, 2**30)]), FakeGpu("GPU-b"), FakeGpu("GPU-c")]
    _fake, _backend, exporter, reg = make(gpus, tmp_path)
    exporter.collect_once(1000.0)
    exporter.collect_once(1001.0)
    info = "factoryctl_gpu_job_info"
    for i, uuid in ((0, "GPU-a"), (1, "GPU-b")):
        assert reg.get_sample_value(info, labels(i, uuid, job_id="77", user="ada")) == 1
    assert reg.get_sample_value(info, labels(2, "GPU-c", job_id="77", user="ada")) is None
    assert reg.get_sample_value("factoryctl_exporter_job_map_errors_total") == 1
