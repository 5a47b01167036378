"""factoryctl-exporter: NVML (or simulated) GPU telemetry, GPU->job attribution and
per-job energy counted at the source, served to Prometheus.

Nothing here imports textual or httpx (an import-linter contract checks it).
"""
