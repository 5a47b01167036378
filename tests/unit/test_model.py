from __future__ import annotations

from factoryctl.model import GPU, Allocation, FactorySnapshot, Job, JobState, Node, NodeState
from factoryctl.occupancy import factory_occupancy, job_occupancy, percentile


def _snap() -> FactorySnapshot:
    gpus = (
        GPU("n1", 0, utilization=0.9, power_watts=650.0, job_ids=("1",)),
        GPU("n1", 1, utilization=0.0, power_watts=70.0, job_ids=("1",)),
        GPU("n1", 2, utilization=0.0, power_watts=55.0),
        GPU("n2", 0, up=False),
    )
    jobs = (
        Job("1", "ada", allocations=(Allocation("n1", (0, 1)),), start_time=100.0),
        Job("2", "bob", state=JobState.COMPLETED, start_time=0.0, end_time=50.0),
    )
    nodes = (
        Node("n1", NodeState.MIXED, gpu_count=3, gpus_allocated=2),
        Node("n2", NodeState.DOWN, gpu_count=1),
    )
    return FactorySnapshot(time=200.0, nodes=nodes, gpus=gpus, jobs=jobs)


def test_snapshot_indexes_gpus_by_node_and_job() -> None:
    snap = _snap()
    assert [g.index for g in snap.gpus_of_node("n1")] == [0, 1, 2]
    assert snap.gpu("n2", 0) is not None and snap.gpu("n2", 5) is None
    assert [g.index for g in snap.gpus_of_job(snap.jobs[0])] == [0, 1]
    assert [j.job_id for j in snap.jobs_on_node("n1")] == ["1"]


def test_factory_occupancy_counts_idle_allocated_and_out_of_service() -> None:
    occ = factory_occupancy(_snap())
    assert (occ.total, occ.allocated, occ.active, occ.idle_allocated) == (4, 2, 1, 1)
    assert occ.out_of_service == 1 and occ.unreported == 1


def test_job_occupancy_uses_low_percentile_and_sums_power() -> None:
    snap = _snap()
    occ = job_occupancy(snap.jobs[0], snap.gpus_of_job(snap.jobs[0]))
    assert occ.mean_utilization == 0.45
    assert occ.low_utilization is not None and abs(occ.low_utilization - 0.09) < 1e-9
    assert occ.idle_gpus == 1 and occ.power_watts == 720.0


def test_runtime_uses_end_time_when_finished() -> None:
    snap = _snap()
    assert snap.jobs[0].runtime_seconds(200.0) == 100.0
    assert snap.jobs[1].runtime_seconds(200.0) == 50.0


def test_percentile_edges() -> None:
    assert percentile([], 0.1) is None
    assert percentile([3.0], 0.5) == 3.0
    assert percentile([0.0, 10.0], 0.5) == 5.0


def test_node_state_service_flags() -> None:
    assert NodeState.MIXED.in_service and not NodeState.MIXED.out_of_service
    assert NodeState.DRAINING.out_of_service and not NodeState.DRAINING.in_service
