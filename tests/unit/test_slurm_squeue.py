"""The split job list (``slurm_squeue``): pending jobs from squeue's text, the others from
their JSON. The text lines are 24.11's own (a lab cluster: a held array whose name holds
"|", a held job with an AdminComment, running and finished jobs); the JSON is the
recorded ``squeue_24.11.json`` (two running jobs, one pending). The comparison with
every job's JSON on real clusters: tests/integration/test_slurm_grouped_reads.py."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from factoryctl.errors import ExitStatus, FactoryctlError
from factoryctl.model import Job, JobState
from factoryctl.scheduler.slurm_cli import SlurmCLI
from factoryctl.scheduler.slurm_json import parse_jobs
from factoryctl.scheduler.slurm_squeue import (
    NOT_PENDING,
    commented_jobs,
    merge_jobs,
    parse_job_rows,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
ROWS_24_11 = """\
5|COMPLETED|root|(null)|gpu|quick
2|PENDING|root|(null)|gpu|plain
1|PENDING|root|(null)|gpu|arr|name x
3|RUNNING|root|(null)|gpu|run
"""


def test_rows_keep_a_name_that_holds_the_separator() -> None:
    rows = parse_job_rows(ROWS_24_11)
    assert [r.job_id for r in rows] == ["5", "2", "1", "3"]
    assert rows[2].name == "arr|name x" and rows[2].account == ""
    assert rows[2].pending_job() == Job(
        job_id="1", user="root", partition="gpu", name="arr|name x", state=JobState.PENDING
    )


@pytest.mark.parametrize("line", ["x|PENDING|root|a|gpu|n", "7|PENDING|root", "{"])
def test_a_job_line_we_cannot_read_is_an_error(line: str) -> None:
    with pytest.raises(FactoryctlError, match="line not understood") as info:
        parse_job_rows(line + "\n")
    assert info.value.status is ExitStatus.SCHEDULER_ERROR


def test_only_lines_with_an_admin_comment_are_named() -> None:
    text = (
        "JobId=1 JobName=a UserId=root(0) JobState=PENDING Reason=JobHeldUser\n"
        "JobId=2 JobName=b UserId=root(0) JobState=PENDING AdminComment=energy | x=1 Comment=\n"
    )
    assert commented_jobs(text) == {"2"}
    with pytest.raises(FactoryctlError, match="scontrol -o show job"):
        commented_jobs("garbage AdminComment=x\n")


def test_merge_takes_the_json_where_it_has_the_job() -> None:
    from_json = [Job(job_id="3", user="root", state=JobState.RUNNING)]
    done = Job(job_id="5", user="root", state=JobState.COMPLETED)
    merged = merge_jobs(parse_job_rows(ROWS_24_11), [*from_json, done])
    assert merged is not None
    assert [j.job_id for j in merged] == ["5", "2", "1", "3"]
    assert merged[3] is from_json[0] and merged[1].state is JobState.PENDING
    # A finished or running job the JSON does not hold: read every job's JSON instead.
    assert merge_jobs(parse_job_rows(ROWS_24_11), from_json) is None
    # A job submitted between the reads (JSON only) is kept.
    late = Job(job_id="9", user="root", state=JobState.RUNNING)
    again = merge_jobs(parse_job_rows(ROWS_24_11), [*from_json, done, late])
    assert again is not None and again[-1] is late


class Slurm:
    """squeue and scontrol as 24.11 answers them, from the recorded squeue_24.11.json: the
    JSON honours --states and --jobs, the text lists every job."""

    def __init__(self, comment_on: str = "") -> None:
        self.doc = json.loads((FIXTURES / "squeue_24.11.json").read_text())
        self.comment_on = comment_on
        if comment_on:
            job = next(j for j in self.doc["jobs"] if str(j["job_id"]) == comment_on)
            job["admin_comment"] = "energy | x=1"

    def _json(self, keep: set[str] | None, pending: bool) -> str:
        jobs = [
            j
            for j in self.doc["jobs"]
            if (keep is None or str(j["job_id"]) in keep)
            and (pending or j["job_state"] != ["PENDING"])
        ]
        return json.dumps({**self.doc, "jobs": jobs})

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str] | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        out = ""
        if argv[:2] == ["squeue", "--noheader"]:
            out = "".join(
                f"{j['job_id']}|{j['job_state'][0]}|{j['user_name']}|(null)|{j['partition']}|"
                f"{j['name']}\n"
                for j in self.doc["jobs"]
            )
        elif list(argv) == ["squeue", "--json", f"--states={NOT_PENDING}"]:
            out = self._json(None, pending=False)
        elif len(argv) == 4 and argv[3].startswith("--jobs="):
            out = self._json(set(argv[3][7:].split(",")), pending=True)
        elif list(argv) == ["squeue", "--json", "--states=all"]:
            out = self._json(None, pending=True)
        elif list(argv) == ["scontrol", "-o", "show", "job"]:
            out = "".join(
                f"JobId={j['job_id']} JobName={j['name']}"
                + (" AdminComment=energy | x=1" if str(j["job_id"]) == self.comment_on else "")
                + "\n"
                for j in self.doc["jobs"]
            )
        else:
            raise AssertionError(f"unexpected {argv}")
        return subprocess.CompletedProcess(list(argv), 0, out, "")


def by_id(jobs: Sequence[Job]) -> dict[str, Job]:
    return {j.job_id: j for j in jobs}


@pytest.mark.parametrize("comment_on", ["", "3"])
def test_the_backend_reads_pending_jobs_from_text_and_the_rest_from_json(
    comment_on: str,
) -> None:
    runner = Slurm(comment_on)
    cli = SlurmCLI(runner=runner)
    every = parse_jobs(runner._json(None, pending=True), "squeue --json")
    assert by_id(cli.jobs()) == by_id(every) and cli.split_fallbacks == 0
    assert by_id(every)["3"].state is JobState.PENDING
    asked = [c for c in cli.calls if any(a.startswith("--jobs=") for a in c)]
    assert asked == ([["squeue", "--json", "--states=all", "--jobs=3"]] if comment_on else [])
    assert by_id(cli.jobs())["3"].admin_comment == ("energy | x=1" if comment_on else "")


def test_a_job_missing_from_the_json_sends_the_read_to_every_jobs_json() -> None:
    runner = Slurm()
    runner.doc["jobs"][0]["job_state"] = ["STOPPED"]  # as if our state list missed it
    cli = SlurmCLI(runner=runner)
    original = runner._json

    def without_stopped(keep: set[str] | None, pending: bool) -> str:
        doc = json.loads(original(keep, pending))
        if not pending:
            doc["jobs"] = [j for j in doc["jobs"] if j["job_state"] != ["STOPPED"]]
        return json.dumps(doc)

    runner._json = without_stopped  # type: ignore[method-assign]
    jobs = cli.jobs()
    assert cli.split_fallbacks == 1 and len(jobs) == 3
    assert cli.calls[-1] == ["squeue", "--json", "--states=all"]


def test_a_squeue_that_ignores_states_is_read_as_every_jobs_json_from_then_on() -> None:
    """22.05's squeue --json prints every job whatever --states says: the text list adds
    nothing there, so after the first read it is no longer asked."""
    runner = Slurm()
    runner._json = lambda keep, pending: Slurm._json(runner, keep, True)  # type: ignore[method-assign]
    cli = SlurmCLI(runner=runner)
    first, second = cli.jobs(), cli.jobs()
    assert by_id(first) == by_id(second) and len(first) == 3 and not cli.split_jobs
    assert [" ".join(c[:3]) for c in cli.calls] == [
        "squeue --noheader --states=all",
        f"squeue --json --states={NOT_PENDING}",
        "squeue --json --states=all",
    ]
