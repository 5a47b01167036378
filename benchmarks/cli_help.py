"""Cold start of `factoryctl --help` against baselines measured in the same run.

    .venv/bin/python benchmarks/cli_help.py [--runs 20]

Baselines: a bare interpreter (`python -c pass`), importing click alone, and importing
textual + httpx (what a non-lazy CLI would pay). Reports medians and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import click'": [sys.executable, "-c", "import click"],
    "factoryctl --help": [sys.executable, "-m", "factoryctl", "--help"],
    "factoryctl --demo nodes (64x8)": [sys.executable, "-m", "factoryctl", "--demo", "nodes"],
    "python -c 'import textual.app, httpx'": [sys.executable, "-c", "import textual.app, httpx"],
}


def median_seconds(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    results = {name: median_seconds(argv, args.runs) for name, argv in CASES.items()}
    base = results["python -c pass"]
    print(f"| command | median ({args.runs} runs) | × bare python |")
    print("|---|---|---|")
    for name, seconds in results.items():
        print(f"| `{name}` | {seconds * 1000:.0f} ms | {seconds / base:.1f}× |")


if __name__ == "__main__":
    main()
