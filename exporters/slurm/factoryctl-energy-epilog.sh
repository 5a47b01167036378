#!/bin/bash
# Slurm EpilogSlurmctld: record the job's GPU energy in its AdminComment.
#
# Runs `factoryctl job-epilog $SLURM_JOB_ID` on the controller, as SlurmUser (who may
# update any job's AdminComment). That command waits for Prometheus to hold the job's last
# samples (end + 2 scrape intervals + the engine's search delay), then appends
#   factoryctl:v1 job=ID energy_j=... gpu_s=... active_gpu_s=... src=job-counter
# to the AdminComment, keeping any text the site put there; `sacct -o JobID,AdminComment`
# shows it for as long as accounting keeps the job. Install:
#   slurm.conf:  EpilogSlurmctld=/etc/slurm/factoryctl-energy-epilog.sh
#   /etc/default/factoryctl-energy-epilog (optional, read if present):
#     FACTORYCTL_PROMETHEUS_URL=http://prometheus:9090   (or [prometheus] in the config)
#
# Never fails or delays the job: by default the work is detached into its own session
# and this script returns at once; it is bounded by a hard timeout, logged to syslog (tag
# factoryctl-energy) and to $FACTORYCTL_EPILOG_LOG if set, and the exit status is 0.
# Idempotent: a job whose AdminComment already holds its segment is not written again.
# Each run (written, skipped or failed) is also in factoryctl's audit log (docs/actions.md).
set -u
# Its assignments reach factoryctl (set -a exports them): FACTORYCTL_PROMETHEUS_URL, ...
if [ -r /etc/default/factoryctl-energy-epilog ]; then
    set -a
    . /etc/default/factoryctl-energy-epilog
    set +a
fi
export PATH=${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
FACTORYCTL=${FACTORYCTL:-factoryctl}
TIMEOUT=${FACTORYCTL_EPILOG_TIMEOUT:-30}
DETACH=${FACTORYCTL_EPILOG_DETACH:-1}
LOG=${FACTORYCTL_EPILOG_LOG:-}
log() {
    logger -t factoryctl-energy -- "$*" 2>/dev/null
    [ -n "$LOG" ] && echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >>"$LOG" 2>/dev/null
    return 0
}

job=${SLURM_JOB_ID:-}
if [[ ! $job =~ ^[0-9]+([_+][0-9]+)?$ ]]; then
    log "no usable SLURM_JOB_ID (${job:-unset}); nothing recorded"
    exit 0
fi
if [[ ! $TIMEOUT =~ ^[0-9]+$ ]] || [ "$TIMEOUT" -lt 1 ]; then
    log "job $job: FACTORYCTL_EPILOG_TIMEOUT=$TIMEOUT is not a number of seconds; using 30"
    TIMEOUT=30
fi
if [ "$DETACH" = 1 ]; then
    # Slurm waits for this script: hand the work to a process in its own session and
    # return. Not before that process has its session: 24.11 and 26.05 kill the script's
    # process group as it exits (seen: one job in three lost its record with `setsid -f`).
    FACTORYCTL_EPILOG_DETACH=0 setsid "$0" </dev/null >/dev/null 2>&1 &
    child=$!
    i=0
    while [ $i -lt 200 ]; do
        sid=$(awk '{print $6}' "/proc/$child/stat" 2>/dev/null) || break  # gone: done
        [ "$sid" = "$child" ] && break
        sleep 0.01
        i=$((i + 1))
    done
    exit 0
fi
# The command's own --timeout leaves it time to give up cleanly; `timeout` is the hard
# bound (TERM, then KILL 2 s later) should anything hang.
inner=$((TIMEOUT > 6 ? TIMEOUT - 3 : TIMEOUT))
out=$(timeout -k 2 "$TIMEOUT" "$FACTORYCTL" job-epilog --timeout "$inner" "$job" 2>&1)
rc=$?
case $rc in
    0) log "$out" ;;
    124 | 137) log "job $job: killed after ${TIMEOUT}s; nothing recorded ${out:+($out)}" ;;
    *) log "job $job: nothing recorded (exit $rc): $out" ;;
esac
exit 0
