"""The lab: real components (Prometheus, VictoriaMetrics, Slurm, exporters) on 127.0.0.1."""
