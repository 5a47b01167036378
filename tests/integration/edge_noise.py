"""How far the dcgm-exporter energy method's edge split can stray on the lab's jobs.

    .venv/bin/python -m tests.integration.edge_noise [--runs 300]

The live test (``test_dcgm_job_energy_from_gpu_counters_matches_truth``) compares each
finished job's energy from GPU counters with the simulator's truth. At a job's start and
end the method splits one scrape gap's energy by two instantaneous power readings
(``telemetry.edges``). For a steady job that is close to exact; for job 503, bursty
inference whose power the simulator moves by up to ±15 % every 20 ms and between
bursts, those two readings are noisy, and over a job of LAST_PHASE seconds the noise alone
moves its energy by a few tenths of a percent either way. This replays the lab's handover
(501 training on two GPUs, handed at once to 503, which ends LAST_PHASE s later) with the
same simulator, step, phases and dcgm rendering, scraped every 1 s at a random phase,
``--runs`` times with seeds 0..runs-1, and prints the error distribution: with regular
gaps, and with each gap stretched by 0.3 s on average (exponential), as a loaded CI
machine stretches them. Pure Python, no engine: the engines store what they scrape, and
the method reads those samples back.
"""

from __future__ import annotations

import argparse
import random
import statistics

from factoryctl.sim import SimConfig, SimFactory, Workload
from factoryctl.telemetry.edges import gpu_energy_between
from tests.integration.simexpo import STEP
from tests.integration.telemetry_lab import LAST_PHASE, PHASE

GPUS = (0, 1)  # n0's GPUs 0-1: 501's, then 503's


def one_run(seed: int, stretch: float) -> dict[str, float]:
    """Relative error of the method for jobs 501 and 503 in one replay."""
    t0 = 1000.0
    sim = SimFactory(SimConfig(nodes=2, gpus_per_node=4, jobs=False, start_time=t0, seed=seed))
    rnd = random.Random(seed)
    n0 = sim.node_names[0]
    handover, end = t0 + 2 * PHASE, t0 + 2 * PHASE + LAST_PHASE
    energy: dict[int, list[tuple[float, float]]] = {g: [] for g in GPUS}
    power: dict[int, list[tuple[float, float]]] = {g: [] for g in GPUS}
    scrape = t0 - 3.0 + rnd.random()
    events = [(t0, "501"), (handover, "503"), (end, "end")]
    while events or scrape < end + 4.0:
        if events and events[0][0] < scrape:
            at, what = events.pop(0)
            sim.advance_to(at, STEP)
            if what == "501":
                sim.assign("501", "ada", n0, list(GPUS), Workload.TRAINING)
            elif what == "503":
                sim.release("501")
                sim.assign("503", "chen", n0, list(GPUS), Workload.INFERENCE)
            else:
                sim.release("503")
            continue
        sim.advance_to(scrape, STEP)
        for g in GPUS:  # as tests/integration/simexpo.py renders dcgm-exporter's
            energy[g].append((scrape, round(sim.energy[g] * 1000) / 1000))
            power[g].append((scrape, round(sim.power[g], 3)))
        scrape += 1.0 + (rnd.expovariate(1 / stretch) if stretch else 0.0)
    out = {}
    for job, (start, stop) in {"501": (t0, handover), "503": (handover, end)}.items():
        parts = [gpu_energy_between(energy[g], power[g], start, stop) for g in GPUS]
        assert all(p is not None for p in parts)
        truth = sim.true_energy(job)
        out[job] = (sum(p for p in parts if p is not None) - truth) / truth
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=300)
    args = p.parse_args()
    print(f"PHASE {PHASE:g} s, LAST_PHASE {LAST_PHASE:g} s, {args.runs} seeded runs each")
    for stretch in (0.0, 0.3):
        runs = [one_run(seed, stretch) for seed in range(args.runs)]
        for job in ("501", "503"):
            errs = [r[job] for r in runs]
            worst = sorted(abs(e) for e in errs)
            print(
                f"gaps +{stretch:g} s, job {job}: mean {statistics.mean(errs):+.3%}"
                f" sd {statistics.pstdev(errs):.3%}"
                f" p99 {worst[int(0.99 * len(worst))]:.3%} max {worst[-1]:.3%}"
            )


if __name__ == "__main__":
    main()
