from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from factoryctl.energy import JobEnergyAccountant, MonotonicCounter, counter_increase, joules_to_kwh


def test_kwh() -> None:
    assert joules_to_kwh(3_600_000) == 1.0


def test_counter_increase_handles_reset() -> None:
    assert counter_increase([10.0, 20.0, 5.0, 7.0]) == 10.0 + 5.0 + 2.0


@given(st.lists(st.floats(min_value=0, max_value=1e9), min_size=1, max_size=50))
def test_monotonic_counter_never_goes_backwards(raws: list[float]) -> None:
    counter, last = MonotonicCounter(), 0.0
    for raw in raws:
        counter.observe(raw)
        assert counter.value >= last
        last = counter.value
    assert abs(counter.value - counter_increase(raws)) <= 1e-6 * max(1.0, counter.value)


def test_accountant_charges_interval_to_holder_at_its_start() -> None:
    acc = JobEnergyAccountant()
    key = ("n1", 0)
    acc.observe(0.0, {key: 1000.0}, {key: ("a",)}, {key: 1.0})
    acc.observe(10.0, {key: 8000.0}, {key: ("b",)}, {key: 0.5})  # a held it for [0, 10]
    acc.observe(20.0, {key: 9000.0}, {}, {key: 0.0})  # b held it for [10, 20]
    assert acc.energy_of("a") == 7000.0
    assert acc.energy_of("b") == 1000.0
    # Utilization, like attribution, is the one observed at the start of each interval.
    assert acc.jobs["a"].gpu_seconds == 10.0 and acc.jobs["a"].active_gpu_seconds == 10.0
    assert acc.jobs["b"].gpu_seconds == 10.0 and acc.jobs["b"].active_gpu_seconds == 5.0


def test_accountant_splits_shared_gpu_equally_and_survives_reset() -> None:
    acc = JobEnergyAccountant()
    key = ("n1", 0)
    acc.observe(0.0, {key: 500.0}, {key: ("a", "b")})
    acc.observe(1.0, {key: 700.0}, {key: ("a", "b")})
    acc.observe(2.0, {key: 50.0}, {key: ("a", "b")})  # driver reload: counter restarted
    assert acc.energy_of("a") == acc.energy_of("b") == (200.0 + 50.0) / 2


def test_accountant_drops_finished_jobs_after_grace() -> None:
    acc = JobEnergyAccountant(grace_seconds=60.0)
    key = ("n1", 0)
    acc.observe(0.0, {key: 0.0}, {key: ("a",)})
    acc.observe(10.0, {key: 100.0}, {})
    acc.observe(69.0, {key: 200.0}, {})
    assert acc.energy_of("a") == 100.0  # kept for the grace period, final value unchanged
    acc.observe(70.0, {key: 210.0}, {})
    assert acc.energy_of("a") is None


def test_accountant_reads_a_gpu_whose_owner_changes_between_collections() -> None:
    """observe_gpus: a GPU read when its job ends (between two collections) charges the
    job up to then, and its next owner from then; the other GPUs are not touched."""
    acc = JobEnergyAccountant()
    a, b = ("n1", 0), ("n1", 1)
    acc.observe(0.0, {a: 0.0, b: 0.0}, {a: ("j1",), b: ("j2",)}, {a: 1.0, b: 1.0})
    acc.observe_gpus(4.0, {a: 400.0}, {a: ("j3",)}, {a: 0.5})  # j1 ended at 4, j3 started
    assert acc.energy_of("j1") == 400.0 and acc.jobs["j1"].gpu_seconds == 4.0
    assert acc.energy_of("j2") == 0.0 and acc.jobs["j3"].first_seen == 4.0
    acc.observe(10.0, {a: 460.0, b: 1000.0}, {a: ("j3",), b: ("j2",)}, {a: 0.5, b: 1.0})
    assert acc.energy_of("j1") == 400.0  # nothing after its end
    assert acc.energy_of("j3") == 60.0 and acc.jobs["j3"].gpu_seconds == 6.0
    assert acc.jobs["j3"].active_gpu_seconds == 3.0  # at the utilization read at 4
    assert acc.energy_of("j2") == 1000.0 and acc.jobs["j2"].gpu_seconds == 10.0
    # The next interval is the whole collection interval again for every GPU.
    acc.observe(20.0, {a: 560.0, b: 1100.0}, {a: ("j3",), b: ("j2",)})
    assert acc.jobs["j3"].gpu_seconds == 16.0 and acc.jobs["j2"].gpu_seconds == 20.0
    # j3 ends at 25: charged up to then, and nobody is charged after.
    acc.observe_gpus(25.0, {a: 600.0}, {})
    assert acc.energy_of("j3") == 200.0 and acc.jobs["j3"].gpu_seconds == 21.0
    acc.observe(30.0, {a: 650.0, b: 1200.0}, {b: ("j2",)})
    assert acc.energy_of("j3") == 200.0 and acc.jobs["j3"].gpu_seconds == 21.0
    assert acc.energy_of("j2") == 1200.0 and acc.jobs["j2"].gpu_seconds == 30.0
