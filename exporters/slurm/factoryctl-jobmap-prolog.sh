#!/bin/bash
# Slurm Prolog: record which job holds which GPU for factoryctl-exporter.
#
# Writes one file per allocated GPU index in the job-map directory, one job id per line
# (dcgm-exporter's --hpc-job-mapping-dir layout). Install on every GPU node:
#   slurm.conf:  Prolog=/etc/slurm/prolog.d/*   (or call this script from your prolog)
#   exporter:    factoryctl-exporter --job-map-dir /run/factoryctl/job-map
#
# A failing Prolog drains the node, so this script never fails the job: every problem is
# logged and the exit status is 0. The exporter falls back to /proc when a file is missing.
set -u
MAP_DIR=${FACTORYCTL_JOB_MAP_DIR:-/run/factoryctl/job-map}
log() { logger -t factoryctl-jobmap -- "$*" 2>/dev/null; echo "factoryctl-jobmap: $*" >&2; }

job=${SLURM_JOB_ID:-}
gpus=${SLURM_JOB_GPUS:-${SLURM_STEP_GPUS:-}}
if [[ ! $job =~ ^[0-9]+([_+][0-9]+)?$ ]]; then
    log "prolog: no usable SLURM_JOB_ID (${job:-unset}); nothing recorded"
    exit 0
fi
[ -n "$gpus" ] || exit 0  # a job without GPUs on this node

expand() {  # "0,2-3" -> "0 2 3"
    local part
    for part in ${1//,/ }; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
        elif [[ $part =~ ^[0-9]+$ ]]; then
            echo "$part"
        else
            log "prolog: job $job: ignoring GPU '$part' in SLURM_JOB_GPUS=$gpus"
        fi
    done
}

if ! mkdir -p "$MAP_DIR" 2>/dev/null || ! chmod 0755 "$MAP_DIR" 2>/dev/null; then
    log "prolog: cannot create $MAP_DIR; job $job not recorded"
    exit 0
fi
(
    # Prologs of jobs sharing a node run concurrently: one writer at a time.
    flock -w 10 9 || { log "prolog: job $job: lock timeout"; exit 0; }
    for gpu in $(expand "$gpus"); do
        file="$MAP_DIR/$gpu"
        tmp="$MAP_DIR/.$gpu.$$"
        { [ -f "$file" ] && grep -vx -- "$job" "$file"; echo "$job"; } >"$tmp" 2>/dev/null &&
            chmod 0644 "$tmp" && mv -f "$tmp" "$file" ||
            { rm -f "$tmp"; log "prolog: job $job: cannot write $file"; }
    done
) 9>"$MAP_DIR/.lock"
exit 0
