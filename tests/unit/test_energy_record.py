"""Issue 12 part 4: the job's energy in Slurm's AdminComment, its format and its merge.

Pure functions and the command's paths that need no Prometheus; the whole path (a real
slurmctld running the epilog, a real Prometheus) is tests/integration/test_energy_epilog.py.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from factoryctl.cli.env import Environment
from factoryctl.cli.main import main
from factoryctl.energy_record import (
    MAX_COMMENT,
    EnergyRecord,
    RecordError,
    find_segment,
    merge,
    parse_record,
)
from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Allocation, FactorySnapshot, Job, JobState, Node, NodeState
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurm_json import parse_jobs
from factoryctl.telemetry.client import PromClient, PromConfig
from factoryctl.telemetry.job_energy import JobEnergy
from factoryctl.telemetry.prometheus_source import PrometheusSource, SourceOptions
from tests.conftest import FROZEN_NOW, Result

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
REC = EnergyRecord("4242", 123456.74, 3600.0, 3400.0, "job-counter")
SEGMENT = (
    "factoryctl:v1 job=4242 energy_j=123456.7 gpu_s=3600.0 active_gpu_s=3400.0 src=job-counter"
)


def test_segment_is_compact_and_round_trips() -> None:
    assert REC.segment() == SEGMENT
    back = parse_record(SEGMENT)
    assert back == EnergyRecord("4242", 123456.7, 3600.0, 3400.0, "job-counter")
    # dcgm sites: no active GPU-seconds; the key is left out, and read back as None.
    dcgm = EnergyRecord("7_3", 10.0, 20.0, None, "gpu-counter")
    assert "active_gpu_s" not in dcgm.segment()
    assert parse_record("site text; " + dcgm.segment()) == dcgm


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (EnergyRecord("42; rm", 1.0), "invalid job id"),
        (EnergyRecord("42", float("nan")), "not a recordable"),
        (EnergyRecord("42", -1.0), "not a recordable"),
        (EnergyRecord("42", 1.0, source="guess"), "unknown energy source"),
    ],
)
def test_unrecordable_values_are_refused(record: EnergyRecord, error: str) -> None:
    with pytest.raises(RecordError, match=error):
        record.segment()


@pytest.mark.parametrize(
    ("comment", "error"),
    [
        ("factoryctl:v2 job=1 energy_j=1.0 src=job-counter", "v2 is not understood"),
        ("factoryctl:v1 job=1 src=job-counter", "lacks energy_j="),
        ("factoryctl:v1 job=1 energy_j=lots src=job-counter", "not a number"),
        ("factoryctl:v1 job=1 energy_j=-5 src=job-counter", "not a quantity"),
        ("factoryctl:v1 job=1 energy_j=5 src=estimate", "unknown src"),
        ("factoryctl:v1 job=1 energy_j=5 oops src=job-counter", "malformed token"),
    ],
)
def test_an_unreadable_segment_of_ours_is_a_loud_error(comment: str, error: str) -> None:
    with pytest.raises(RecordError, match=error):
        parse_record(comment)


def test_no_segment_is_no_record() -> None:
    assert parse_record("") is None
    assert parse_record("reviewed by ops, see ticket 12") is None
    assert find_segment("a; " + SEGMENT + "; b") == SEGMENT


def test_merge_keeps_the_sites_text_and_writes_once() -> None:
    first = merge("", REC)
    assert first.comment == SEGMENT
    # Someone else's note stays, ours is appended after it.
    site = merge("billing: project X", REC)
    assert site.comment == "billing: project X; " + SEGMENT
    # An epilog run twice writes once, whatever surrounds our segment.
    assert merge(first.comment, REC).comment is None
    again = merge(site.comment or "", REC)
    assert again.comment is None and "already recorded for job 4242" in again.reason


def test_merge_replaces_only_our_stale_segment() -> None:
    stale = "before; factoryctl:v1 job=1 energy_j=5.0 src=job-counter; after"
    new = merge(stale, REC)
    assert new.comment == f"before; {SEGMENT}; after"
    unreadable = merge("factoryctl:v9 whatever; after", REC)
    assert unreadable.comment == f"{SEGMENT}; after"


def test_merge_leaves_an_encoded_or_full_comment_intact() -> None:
    # Princeton jobstats keeps one base64 record there: anything appended corrupts it.
    js = merge("JS1:eyJncHVzIjogOH0=", REC)
    assert js.comment is None and "left intact" in js.reason
    long = "x" * (MAX_COMMENT - 10)
    full = merge(long, REC)
    assert full.comment is None and "no room" in full.reason


@pytest.mark.parametrize(
    "name",
    ["squeue_22.05.json", "squeue_24.11.json", "squeue_26.05.json", "scontrol_job_26.05.json"],
)
def test_admin_comment_is_read_from_every_generations_json(name: str) -> None:
    doc = json.loads((FIXTURES / name).read_text())
    assert all("admin_comment" in j for j in doc["jobs"]), "the field this relies on"
    doc["jobs"][0]["admin_comment"] = "ops note; " + SEGMENT
    jobs = parse_jobs(json.dumps(doc), name)
    assert jobs[0].admin_comment == "ops note; " + SEGMENT
    assert parse_record(jobs[0].admin_comment) is not None
    assert all(j.admin_comment == "" for j in jobs[1:])


class Runner:
    """Answers each program as scripted: {program: (returncode, stdout, stderr)}."""

    def __init__(self, **answers: tuple[int, str, str]) -> None:
        self.argvs: list[list[str]] = []
        self.answers = answers

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        self.argvs.append(list(argv))
        key = argv[0] + ("_version" if "--version" in argv else "")
        code, out, err = self.answers.get(key, (0, "", ""))
        return subprocess.CompletedProcess(list(argv), code, out, err)


def test_set_admin_comment_is_one_scontrol_update_while_the_job_runs() -> None:
    runner = Runner()
    SlurmCLI(runner=runner).set_admin_comment("42", "a; " + SEGMENT)
    assert runner.argvs == [["scontrol", "update", "JobId=42", f"AdminComment=a; {SEGMENT}"]]
    with pytest.raises(Exception, match="invalid job id"):
        SlurmCLI(runner=runner).set_admin_comment("42 Partition=x", "")
    assert len(runner.argvs) == 1


FINISHED = (1, "", "Job has already finished for job 42")


@pytest.mark.parametrize(
    "refusal", [FINISHED, (1, "", "slurm_update error: Invalid job id specified")]
)
def test_a_finished_jobs_comment_goes_through_sacctmgr(refusal: tuple[int, str, str]) -> None:
    """Ended, or ended and purged from slurmctld already (MinJobAge): slurmdbd takes it."""
    runner = Runner(scontrol=refusal, sacctmgr=(0, " Modified jobs...\n  42 submitted", ""))
    SlurmCLI(runner=runner).set_admin_comment("42", SEGMENT)
    assert runner.argvs[1] == [
        "sacctmgr", "-i", "modify", "job", "where", "jobid=42", "set", f"AdminComment={SEGMENT}"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("answers", "status", "message"),
    [
        # slurmdbd has not stored the job yet: the epilog retries this one until --timeout.
        (
            {"sacctmgr": (0, " Nothing modified\n", "")},
            ExitStatus.SCHEDULER_ERROR,
            "not in the accounting database",
        ),
        # No slurmdbd: once the job has ended, nothing can take its AdminComment.
        (
            {"sacctmgr": (1, "", "You are not running a supported accounting_storage plugin")},
            ExitStatus.SCHEDULER_ERROR,
            "not running a supported accounting_storage",
        ),
        # 22.05's sacctmgr lowercases the whole value: a site's capitals are not ours to lose.
        (
            {"sacctmgr_version": (0, "slurm-wlm 22.05.8\n", "")},
            ExitStatus.REFUSED,
            "lowercases the whole AdminComment",
        ),
    ],
)
def test_a_finished_job_that_cannot_be_written_says_why(
    answers: dict[str, tuple[int, str, str]], status: ExitStatus, message: str
) -> None:
    runner = Runner(
        scontrol=FINISHED, **{"sacctmgr_version": (0, "slurm 24.11.5\n", ""), **answers}
    )
    with pytest.raises(FactoryctlError, match=message) as err:
        SlurmCLI(runner=runner).set_admin_comment("42", "Billing X; " + SEGMENT)
    assert err.value.status == status
    if status is ExitStatus.REFUSED:
        assert not any(a[:3] == ["sacctmgr", "-i", "modify"] for a in runner.argvs)


def test_accounting_holds_the_job_after_slurmctld_forgot_it() -> None:
    line = (
        "42|ada|proj-a|gpu|CANCELLED by 0|1767200000|1767203600|gpu[01-02]"
        f"|billing=2,cpu=2,gres/gpu=4,node=2|ops | note; {SEGMENT}\n"
    )
    runner = Runner(sacct=(0, line, ""))
    job = SlurmCLI(runner=runner).accounted_job("42")
    assert job is not None
    assert (job.user, job.account, job.state) == ("ada", "proj-a", JobState.CANCELLED)
    assert (job.start_time, job.end_time) == (1767200000.0, 1767203600.0)
    assert job.admin_comment == f"ops | note; {SEGMENT}"  # the separator inside survives
    # Its nodes and GPU count, not which GPUs (the attribution history knows those).
    assert [(a.node, a.gpu_indices, a.count) for a in job.allocations] == [
        ("gpu01", (), 2),
        ("gpu02", (), 2),
    ]
    never_ran = "43|ada|proj-a|gpu|CANCELLED by 0|0|1767203600|None assigned|||\n"
    job = SlurmCLI(runner=Runner(sacct=(0, never_ran, ""))).accounted_job("43")
    assert job is not None and job.allocations == () and job.start_time is None
    bad = "44|ada|proj-a|gpu|COMPLETED|1|2|gpu01|gres/gpu=lots|\n"
    with pytest.raises(FactoryctlError, match="gres/gpu='lots'") as err:
        SlurmCLI(runner=Runner(sacct=(0, bad, ""))).accounted_job("44")
    assert err.value.status == ExitStatus.SCHEDULER_ERROR
    assert SlurmCLI(runner=Runner(sacct=(0, "", ""))).accounted_job("42") is None


class Jobs:
    """A scheduler that lists jobs and records AdminComment writes."""

    name = "fake"

    def __init__(self, *jobs: Job) -> None:
        self.listed = list(jobs)
        self.written: list[tuple[str, str]] = []

    def jobs(self) -> list[Job]:
        return self.listed

    def set_admin_comment(self, job_id: str, comment: str) -> None:
        self.written.append((job_id, comment))


def _run(scheduler: Jobs, *argv: str, **environ: str) -> Result:
    """factoryctl in-process with this scheduler and a fixed clock."""
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdout=out,
        stderr=err,
        stdin_isatty=False,
        environ={"HOME": "/nonexistent", **environ},
        clock=lambda: FROZEN_NOW,
    )
    env.scheduler_factory = lambda _env: scheduler  # type: ignore[assignment,return-value]
    status = main(list(argv), env)
    return Result(status, out.getvalue(), err.getvalue())


ENDED = Job(
    "4242",
    "ada",
    state=JobState.COMPLETED,
    start_time=FROZEN_NOW - 3600,
    end_time=FROZEN_NOW - 60,
)


def test_job_epilog_run_twice_writes_once_without_asking_prometheus(tmp_path: Path) -> None:
    done = Jobs(replace(ENDED, admin_comment="ops; " + SEGMENT))
    # No Prometheus is configured: an already recorded job never needs one.
    res = _run(done, "job-epilog", "4242", XDG_STATE_HOME=str(tmp_path))
    assert res.status == 0, res.stderr
    assert res.stdout.startswith("job 4242: nothing written: already recorded")
    assert done.written == []


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (("job-epilog", "42;x"), ExitStatus.USAGE, "invalid job id '42;x'"),
        (("job-epilog", "--timeout", "0", "4242"), ExitStatus.USAGE, "--timeout must be positive"),
        (("job-epilog", "99"), ExitStatus.NOT_FOUND, "job 99 is known neither to slurmctld"),
        (("job-epilog", "4242"), ExitStatus.CONFIG, "no Prometheus URL configured"),
    ],
)
def test_job_epilog_bad_input_is_one_line_and_writes_nothing(
    argv: tuple[str, ...], status: ExitStatus, message: str, tmp_path: Path
) -> None:
    sched = Jobs(ENDED)
    res = _run(sched, *argv, XDG_STATE_HOME=str(tmp_path))
    assert res.status == status, res
    assert res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and message in res.stderr, res.stderr
    assert sched.written == []


def test_job_epilog_unreachable_prometheus_writes_nothing(tmp_path: Path) -> None:
    sched = Jobs(ENDED)
    res = _run(sched, "job-epilog", "4242", FACTORYCTL_PROMETHEUS_URL="http://127.0.0.1:9",
               XDG_STATE_HOME=str(tmp_path))  # fmt: skip
    assert res.status == ExitStatus.TELEMETRY_UNREACHABLE, res
    assert len(res.stderr.splitlines()) == 1
    assert sched.written == []


# -- read back: the recorded figure where Prometheus holds nothing -------------------------
def _source(handler: object, schema: str) -> PrometheusSource:
    client = PromClient(PromConfig("http://prom:9090"), transport=httpx.MockTransport(handler))  # type: ignore[arg-type]
    options = SourceOptions(schema, scrape_interval=15.0, search_delay=0.0)
    return PrometheusSource(client, options=options, clock=lambda: FROZEN_NOW)


def _empty(req: httpx.Request) -> httpx.Response:
    """A Prometheus past its retention: every query answers, with nothing."""
    return httpx.Response(
        200, json={"status": "success", "data": {"resultType": "vector", "result": []}}
    )


OLD = replace(ENDED, admin_comment="ops; " + SEGMENT)


@pytest.mark.parametrize("schema", ["native", "dcgm"])
def test_a_job_older_than_retention_gets_the_recorded_figure(schema: str) -> None:
    src = _source(_empty, schema)
    (e,) = src.job_energy([OLD], now=FROZEN_NOW).values()
    assert (e.joules, e.method) == (123456.7, "admin-comment")
    assert "AdminComment record (job-counter)" in e.note
    # Without a record the job's energy stays unknown, never 0.
    (none,) = src.job_energy([ENDED], now=FROZEN_NOW).values()
    assert none.joules is None and none.method != "admin-comment"


def test_a_recorded_figure_is_never_cut_by_a_window() -> None:
    src = _source(_empty, "dcgm")
    assert OLD.start_time is not None
    (e,) = src.job_energy([OLD], FROZEN_NOW, OLD.start_time + 60, FROZEN_NOW).values()
    assert e.joules is None and "time range cuts the job" in e.note
    (inside,) = src.job_energy([OLD], FROZEN_NOW, OLD.start_time - 60, FROZEN_NOW).values()
    assert inside.joules == 123456.7


def test_an_unreadable_record_says_so() -> None:
    bad = replace(ENDED, admin_comment="factoryctl:v7 job=4242 energy_j=1.0 src=job-counter")
    (e,) = _source(_empty, "dcgm").job_energy([bad], now=FROZEN_NOW).values()
    assert e.joules is None and "v7 is not understood" in e.note


class RecordedSource:
    def snapshot(self) -> FactorySnapshot:
        return FactorySnapshot(time=FROZEN_NOW)

    def energy_report(
        self,
        since: float,
        until: float,
        warnings: list[str] | None = None,
        unavailable: set[str] | None = None,
    ) -> tuple[list[Job], dict[str, JobEnergy]]:
        fresh = replace(ENDED, job_id="7")
        note = "energy from Slurm's AdminComment record (job-counter): Prometheus holds none"
        return [OLD, fresh], {
            "4242": JobEnergy("4242", 123456.7, "admin-comment", note),
            "7": JobEnergy("7", 1000.0, "job-counter"),
        }


def test_energy_says_which_source_each_figure_came_from(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("energy", "--since", "2h", "-o", "json", source=RecordedSource())
    assert res.status == 0, res.stderr
    doc = json.loads(res.stdout)
    sources = {i["job_id"]: i["energy_source"] for i in doc["items"]}
    assert sources == {"4242": "admin-comment", "7": "job-counter"}
    assert doc["warnings"] == [
        "job 4242: energy from Slurm's AdminComment record (job-counter): Prometheus holds none"
    ]
    table = run_cli("energy", "--since", "2h", source=RecordedSource())
    assert "job 4242: energy from Slurm's AdminComment record" in table.stderr


# -- job ID of a job slurmctld purged (MinJobAge): from the accounting ---------------------
class Accounted(Jobs):
    """squeue lists nothing any more; sacct holds the job."""

    def __init__(self, *held: Job) -> None:
        super().__init__()
        self.held = {j.job_id: j for j in held}

    def nodes(self) -> list[Node]:
        return [Node("gpu01", NodeState.IDLE, gpu_count=4)]

    def accounted_job(self, job_id: str) -> Job | None:
        return self.held.get(job_id)


def _job(scheduler: Jobs, job_id: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdin_isatty=False,
                      environ={"HOME": "/nonexistent"}, clock=lambda: FROZEN_NOW)  # fmt: skip
    env.scheduler_factory = lambda _env: scheduler  # type: ignore[assignment,return-value]
    src = _source(_empty, "dcgm")
    src.scheduler = scheduler  # type: ignore[assignment]  # the source joins Slurm's view
    env.source_factory = lambda _env: src  # type: ignore[assignment,return-value]
    status = main(["job", job_id, "-o", "json"], env)
    return Result(status, out.getvalue(), err.getvalue())


def test_job_slurmctld_forgot_comes_from_the_accounting_with_its_energy() -> None:
    held = replace(OLD, allocations=(Allocation("gpu01", (), gpus=4),))
    res = _job(Accounted(held), "4242")
    assert res.status == 0, res.stderr
    doc = json.loads(res.stdout)["job"]
    assert (doc["job_id"], doc["gpus"], doc["state"]) == ("4242", 4, "completed")
    assert doc["energy_joules"] == 123456.7  # the record: this Prometheus holds nothing
    assert doc["energy_source"] == "admin-comment"
    # Its note, once (the other line: this empty Prometheus holds no GPU series at all).
    assert res.stderr.count("job 4242: energy from Slurm's AdminComment record") == 1


def test_job_neither_squeue_nor_the_accounting_knows_is_unknown() -> None:
    res = _job(Accounted(), "4242")
    assert res.status == ExitStatus.NOT_FOUND
    assert res.stderr.strip().endswith("unknown job: 4242") and res.stdout == ""


class NoAccounting(Accounted):
    """A Slurm without slurmdbd: sacct fails."""

    def accounted_job(self, job_id: str) -> Job | None:
        raise FactoryctlError(
            "sacct: Slurm accounting storage is disabled", ExitStatus.SCHEDULER_ERROR
        )


def test_job_unknown_to_squeue_on_a_site_without_accounting_is_unknown() -> None:
    res = _job(NoAccounting(), "4242")
    assert res.status == ExitStatus.NOT_FOUND, res
    (line,) = res.stderr.splitlines()
    assert "unknown job: 4242" in line and "accounting storage is disabled" in line
    assert res.stdout == ""
