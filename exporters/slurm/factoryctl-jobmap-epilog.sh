#!/bin/bash
# Slurm Epilog: remove the job from factoryctl-exporter's job-map directory.
#
# Removes the job's line from every GPU file (not only SLURM_JOB_GPUS: a file left behind
# by a crashed prolog or a changed allocation is cleaned too) and deletes files left empty.
# Like the prolog, it never fails: a failing Epilog drains the node.
set -u
MAP_DIR=${FACTORYCTL_JOB_MAP_DIR:-/run/factoryctl/job-map}
log() { logger -t factoryctl-jobmap -- "$*" 2>/dev/null; echo "factoryctl-jobmap: $*" >&2; }

job=${SLURM_JOB_ID:-}
if [[ ! $job =~ ^[0-9]+([_+][0-9]+)?$ ]]; then
    log "epilog: no usable SLURM_JOB_ID (${job:-unset}); nothing removed"
    exit 0
fi
[ -d "$MAP_DIR" ] || exit 0
(
    flock -w 10 9 || { log "epilog: job $job: lock timeout"; exit 0; }
    for file in "$MAP_DIR"/[0-9]*; do
        [ -f "$file" ] || continue
        grep -qx -- "$job" "$file" || continue
        tmp="$MAP_DIR/.$(basename "$file").$$"
        if grep -vx -- "$job" "$file" >"$tmp"; then
            chmod 0644 "$tmp" && mv -f "$tmp" "$file"
        else
            rm -f "$tmp" "$file"  # grep -v found nothing left: the GPU is free
        fi
    done
) 9>"$MAP_DIR/.lock"
exit 0
