"""The committed man pages are what the click tree generates, and they render cleanly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from factoryctl.cli.manpage import generate

MAN = Path(__file__).resolve().parents[2] / "man"


def test_man_pages_match_the_command_tree() -> None:
    pages = generate()
    committed = {p.name: p.read_text() for p in MAN.glob("factoryctl*.1")}
    drift = sorted(
        name for name in pages.keys() | committed.keys() if pages.get(name) != committed.get(name)
    )
    assert not drift, f"man pages out of date ({drift}); run: python -m factoryctl.cli.manpage man"


def test_every_command_has_a_page_with_exit_status() -> None:
    pages = generate()
    for name in (
        "factoryctl.1",
        "factoryctl-nodes.1",
        "factoryctl-jobs.1",
        "factoryctl-completion.1",
    ):
        assert ".SH EXIT STATUS" in pages[name]
    assert ".SH ENVIRONMENT" in pages["factoryctl.1"] and ".SH FILES" in pages["factoryctl.1"]
    assert ".SH EXAMPLES" in pages["factoryctl-jobs.1"]


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_pages_render_without_groff_warnings() -> None:
    for page in sorted(MAN.glob("factoryctl*.[18]")):
        out = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, text=True
        )
        assert out.returncode == 0 and out.stderr == "", f"{page.name}: {out.stderr}"
