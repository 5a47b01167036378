"""How ``factoryctl rollout`` runs a campaign here: its journal store, the telemetry gate
over the configured Prometheus, confirmation, refusals in the audit log, and the runner
under its lock with SIGTERM taken as ^C."""

from __future__ import annotations

from typing import Any

import click

from factoryctl.actions.guards import RefusedError
from factoryctl.actions.rollout_gate import TelemetryGate
from factoryctl.actions.rollout_journal import Campaign, Store
from factoryctl.actions.rollout_runner import Runner
from factoryctl.cli.actions import audit_log
from factoryctl.cli.env import Environment
from factoryctl.cli.rollout_output import progress_emitter
from factoryctl.errors import ExitStatus


def campaign_store(env: Environment) -> Store:
    return Store(audit_log(env).path.parent / "rollouts")


def gate_telemetry(env: Environment) -> Any:
    """The gate's reader over the configured Prometheus (joined with nothing: Slurm's
    Gres count comes from the runner's own reads)."""
    from factoryctl.telemetry.gpu_health import PromGpuTelemetry
    from factoryctl.telemetry.prom_open import open_prometheus_source

    return PromGpuTelemetry(open_prometheus_source(env.settings))


def campaign_gate(env: Environment, spec: dict[str, Any]) -> TelemetryGate | None:
    gate = spec.get("telemetry_gate") or {}
    if not gate.get("on"):
        return None
    if not env.settings.get("prometheus", {}).get("url"):
        raise RefusedError(
            f"campaign {spec.get('id')} gates on GPU telemetry ({gate.get('source')}), but no "
            "Prometheus is configured here: pass --prometheus URL (or set [prometheus] url)"
        )
    return TelemetryGate(gate_telemetry(env), float(gate.get("gpu_wait", 120.0)))


def confirm_or_refuse(env: Environment, what: str, yes: bool) -> None:
    if yes:
        return
    if not env.stdin_isatty:
        raise RefusedError("no terminal to confirm on: pass --yes to act without confirmation")
    if not click.confirm(what, default=False, err=True):
        raise RefusedError("not confirmed: nothing changed")


def finish_campaign(env: Environment, status: ExitStatus, campaign: Campaign) -> int:
    word = "" if status is ExitStatus.OK else "error: "
    env.stderr.write(f"factoryctl: {word}rollout {campaign.id}: {campaign.message}\n")
    return int(status)


def log_refusal(env: Environment, plan: dict[str, Any], message: str, argv: list[str]) -> None:
    audit_log(env).append(
        {
            "id": plan["id"],
            "event": "refused",
            "time": env.clock(),
            "user": plan["user"],
            "verb": "rollout",
            "nodes": plan["hostlist"],
            "reason": plan["stored_reason"],
            "argv": argv,
            "status": "refused",
            "message": message,
        }
    )


def make_runner(
    env: Environment, store: Store, campaign: Campaign, gate: TelemetryGate | None
) -> Runner:
    return Runner(
        store=store,
        campaign=campaign,
        scheduler=env.scheduler(),
        audit=audit_log(env),
        environ=env.environ,
        emit=progress_emitter(env),
        clock=env.clock,
        interval=float(env.environ.get("FACTORYCTL_ROLLOUT_INTERVAL", "1") or 1),
        gate=gate,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM as ^C: stop the commands we started, keep the journal


def run_campaign(
    env: Environment, store: Store, campaign: Campaign, gate: TelemetryGate | None = None
) -> int:
    import signal
    import threading

    with store.runner_lock(campaign.id) as got:
        if not got:
            raise RefusedError(f"campaign {campaign.id} is being run by another process")
        runner = make_runner(env, store, campaign, gate)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        try:
            status = runner.run()
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
    return finish_campaign(env, status, runner.campaign)
