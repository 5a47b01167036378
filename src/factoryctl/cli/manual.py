"""Hand-written parts of the man pages. The rest is generated from the click tree."""

from __future__ import annotations

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "factoryctl": [
        ("Try everything on the built-in simulated factory:", "factoryctl demo"),
        (
            "Drained and down nodes with their reasons:",
            "factoryctl --demo nodes --state drained --state down",
        ),
        ("Jobs as JSON for a script:", "factoryctl --prometheus http://prom:9090 jobs -o json"),
    ],
    "factoryctl nodes": [
        (
            "Nodes of one rack, busiest first:",
            "factoryctl nodes 'gpu[001-032]' --sort -power_watts",
        ),
        (
            "Names of drained nodes, for a script:",
            "factoryctl nodes --state drained -o csv | cut -d, -f1",
        ),
        (
            "Without Prometheus, from Slurm alone (telemetry n/a, listed in unavailable):",
            "factoryctl --scheduler slurm nodes -o json",
        ),
    ],
    "factoryctl node": [
        ("One node with its GPUs and jobs:", "factoryctl node gpu007"),
        (
            "Without Prometheus, state, reason and jobs from Slurm alone:",
            "factoryctl --scheduler slurm node gpu007",
        ),
    ],
    "factoryctl gpus": [
        ("GPUs of two nodes:", "factoryctl gpus --node 'gpu[007-008]'"),
        (
            "The GPUs of a job, with clocks and throttle reasons:",
            "factoryctl -o wide gpus --job 1234",
        ),
    ],
    "factoryctl jobs": [
        ("Jobs holding the most GPUs:", "factoryctl jobs"),
        ("Jobs wasting GPUs (most idle first):", "factoryctl jobs --sort -idle_gpus"),
        (
            "One user's jobs, including finished ones, as CSV:",
            "factoryctl jobs --user ada --all -o csv",
        ),
        ("Without Prometheus, jobs from Slurm alone:", "factoryctl --scheduler slurm jobs"),
    ],
    "factoryctl job": [
        ("Allocation, energy and GPUs of one job:", "factoryctl job 1234"),
        (
            "Its allocation GPU by GPU, from Slurm alone:",
            "factoryctl --scheduler slurm job 1234 -o json",
        ),
    ],
    "factoryctl demo": [
        ("A larger simulated factory:", "factoryctl demo --nodes 512 --seed 3"),
        ("One text summary, for a terminal without a TUI:", "factoryctl demo --once"),
    ],
    "factoryctl top": [
        (
            "The console on Prometheus, polling every 5 s:",
            "factoryctl --prometheus http://prom:9090 top --refresh 5",
        ),
        ("A console for a wall screen, with every action hidden:", "factoryctl top --readonly"),
    ],
    "factoryctl scheduler-exporter": [
        (
            "Serve Slurm's node view on :9836 for Prometheus (scrape job factoryctl-scheduler):",
            "factoryctl --scheduler slurm scheduler-exporter --interval 30",
        ),
        (
            "What Prometheus would scrape, once, from the demo:",
            "factoryctl --demo scheduler-exporter --once",
        ),
        (
            "Node view only, where an exporter already attributes GPUs to jobs:",
            "factoryctl --scheduler slurm scheduler-exporter --no-jobs",
        ),
    ],
    "factoryctl completion": [
        ("Enable completion in bash:", 'eval "$(factoryctl completion bash)"'),
    ],
    "factoryctl drain": [
        (
            "See what a drain would do, change nothing:",
            "factoryctl drain 'gpu[001-004]' --reason 'PSU swap' --dry-run",
        ),
        (
            "From a script: drain and block until the nodes are empty:",
            "factoryctl -o json drain gpu007 --reason 'XID 79' --yes --wait --timeout 2h",
        ),
    ],
    "factoryctl resume": [
        ("Resume nodes factoryctl drained:", "factoryctl resume 'gpu[001-004]'"),
        ("Also resume a node a health check drained:", "factoryctl resume gpu007 --force"),
    ],
    "factoryctl rollout start": [
        (
            "A driver update, gated by DCGM, 5% of the partition at a time, pausing after 3 failures:",
            "factoryctl rollout start 'gpu[001-128]' --reason 'driver 550.90' --max-unavailable 5% "
            "--max-failures 3 --exec 'ssh {node} sudo /opt/site/install-driver 550.90' --reboot "
            "--check 'ssh {node} dcgmi diag -r 2'",
        ),
        (
            "A kernel reboot, 4 nodes at a time, proving the new kernel booted:",
            "factoryctl rollout start 'gpu[001-064]' --reason 'kernel 6.8.0-45' --max-unavailable 4 "
            "--reboot --drain-timeout 6h "
            "--check 'ssh {node} sh -c \"uname -r | grep -qx 6.8.0-45-generic\"' --yes -o json",
        ),
        (
            "A health sweep with no work: unhealthy nodes stay drained:",
            "factoryctl rollout start 'gpu[001-256]' --reason 'health sweep' --max-unavailable 8 "
            "--max-failures 10 --check 'ssh {node} dcgmi diag -r 3'",
        ),
    ],
    "factoryctl rollout resume": [
        (
            "Continue the latest campaign after a crash or a pause:",
            "factoryctl rollout resume --yes",
        ),
    ],
    "factoryctl reboot": [
        (
            "Reboot as soon as jobs end, back into service after:",
            "factoryctl reboot gpu007 --asap --reason 'driver update' --next-state resume --wait",
        ),
    ],
    "factoryctl maintenance create": [
        (
            "A four-hour window on a rack tonight:",
            "factoryctl maintenance create --nodes 'gpu[001-032]' --start 2026-12-01T22:00 "
            "--duration 4h --reason 'PDU swap' --force",
        ),
    ],
    "factoryctl maintenance list": [("Windows as JSON:", "factoryctl -o json maintenance list")],
    "factoryctl audit": [
        ("The last 50 actions:", "factoryctl audit -n 50"),
        ("Raw records for a log shipper:", "factoryctl audit --raw -n 0"),
    ],
}

ENVIRONMENT: list[tuple[str, str]] = [
    ("FACTORYCTL_CONFIG", "Config file to read instead of the default."),
    (
        "FACTORYCTL_SECTION_KEY",
        "Overrides key in [section] of the config, e.g. FACTORYCTL_PROMETHEUS_URL, "
        "FACTORYCTL_OUTPUT_FORMAT, FACTORYCTL_ACTIONS_BLAST_RADIUS_NODES.",
    ),
    ("XDG_CONFIG_HOME", "Where the default config lives (default ~/.config)."),
    ("XDG_STATE_HOME", "Where the audit log lives (default ~/.local/state)."),
    ("NO_COLOR", "When set, output is never colored."),
    (
        "SLURM_CONF",
        "Passed through to Slurm commands. A path that names no file is an error at once"
        " (exit 8), not after Slurm's own minute of retries.",
    ),
]

FILES: list[tuple[str, str]] = [
    (
        "$XDG_CONFIG_HOME/factoryctl/config.toml",
        "Settings (TOML): [prometheus], [scheduler], [output], [energy], [actions], [demo], [tui].",
    ),
    ("$XDG_STATE_HOME/factoryctl/audit.jsonl", "Append-only audit log of every cluster action."),
]
