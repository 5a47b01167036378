from __future__ import annotations

import pytest
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


class _Reference:
    """The accounting rule written plainly, GPU by GPU: a reading's delta since the GPU's
    last reading (its new value after a drop, nothing on a first reading) and the time
    since then go in equal shares to the jobs that held the GPU when that time began."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}
        self.at: dict[int, float] = {}
        self.held: dict[int, tuple[str, ...]] = {}
        self.energy: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def read(self, now: float, key: int, raw: float, holders: tuple[str, ...]) -> None:
        before, since = self.last.get(key), self.at.get(key)
        delta = 0.0 if before is None else raw - before if raw >= before else raw
        for job in self.held.get(key, ()):
            share = len(self.held[key])
            self.energy[job] = self.energy.get(job, 0.0) + delta / share
            self.seconds[job] = self.seconds.get(job, 0.0) + (now - (since or now)) / share
        self.last[key], self.at[key], self.held[key] = raw, now, holders
        for job in holders:
            self.energy.setdefault(job, 0.0)
            self.seconds.setdefault(job, 0.0)


@given(
    st.lists(
        st.tuples(
            st.booleans(),  # a full collection, or an off-cycle read of some GPUs
            st.lists(
                st.tuples(
                    st.integers(0, 5),  # GPU
                    st.floats(0, 500),  # energy since the last reading (or the new value)
                    st.booleans(),  # a counter reset
                    st.lists(st.sampled_from("abcd"), max_size=2, unique=True),  # holders
                ),
                max_size=6,
                unique_by=lambda r: r[0],
            ),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_accountant_matches_the_rule_written_plainly(steps: list) -> None:  # type: ignore[type-arg]
    acc: JobEnergyAccountant[int] = JobEnergyAccountant(grace_seconds=1e9)
    ref = _Reference()
    counters: dict[int, float] = {}
    now = 0.0
    for full, reads in steps:
        now += 1.0
        energy, attribution = {}, {}
        for gpu, gain, reset, holders in reads:
            counters[gpu] = gain if reset else counters.get(gpu, 0.0) + gain
            energy[gpu], attribution[gpu] = counters[gpu], tuple(holders)
        if full:
            # GPUs not read now keep their holders' interval open until their next reading.
            unread = {k: v for k, v in ref.held.items() if k not in energy}
            acc.observe(now, energy, {k: v for k, v in attribution.items() if v})
            for gpu in energy:
                ref.read(now, gpu, energy[gpu], attribution[gpu])
            for gpu in unread:  # observe forgets who held a GPU it did not read
                ref.held[gpu] = ()
                ref.at[gpu] = now
        else:
            acc.observe_gpus(now, energy, {k: v for k, v in attribution.items() if v})
            for gpu in energy:
                ref.read(now, gpu, energy[gpu], attribution[gpu])
    for job, joules in ref.energy.items():
        totals = acc.jobs.get(job)
        assert totals is not None
        assert totals.energy_joules == pytest.approx(joules, rel=1e-9, abs=1e-9)
        assert totals.gpu_seconds == pytest.approx(ref.seconds[job], rel=1e-9, abs=1e-9)
