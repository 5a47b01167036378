from __future__ import annotations

import hostlist
import pytest

from factoryctl import hostlists
from factoryctl.errors import NotFoundError, UsageError
from factoryctl.formats import fmt_bytes, fmt_duration, fmt_kwh, format_value, render_table
from factoryctl.views import Column


def test_expand_and_collect() -> None:
    assert hostlists.expand("gpu[001-003,010]") == ["gpu001", "gpu002", "gpu003", "gpu010"]
    assert hostlists.collect(["gpu001", "gpu002", "gpu010"]) == "gpu[001-002,010]"
    # One name is its own hostlist (the fast path), as python-hostlist says too.
    for name in ("gpu001", "gpu-a01", "n01.site", "node_7"):
        assert hostlists.collect([name]) == name == str(hostlist.collect_hostlist([name]))


@pytest.mark.parametrize("bad", ["", "gpu[1-", "gpu[3-1]", "gpu;rm -rf /", "$(reboot)"])
def test_malformed_or_unsafe_hostlists(bad: str) -> None:
    with pytest.raises(UsageError):
        hostlists.expand(bad)


def test_resolve_names_unknown_nodes_compactly() -> None:
    with pytest.raises(NotFoundError, match=r"unknown nodes: gpu\[009-010\]"):
        hostlists.resolve("gpu[008-010]", ["gpu008"])


def test_units_format_at_the_edge() -> None:
    assert (
        fmt_kwh(12.345) == "12.35 kWh" and fmt_kwh(0.05) == "50 Wh" and fmt_kwh(2500) == "2.50 MWh"
    )
    assert fmt_bytes(80 * 1024**3) == "80.0 GiB"
    assert fmt_duration(3725) == "1h02m" and fmt_duration(90000) == "1d01h"
    assert (
        format_value(None, "ratio") == "-"
        and format_value(None, "ratio", unavailable=True) == "n/a"
    )
    assert format_value(0.0, "ratio") == "0%"


def test_table_aligns_numbers_right_and_hides_wide_columns() -> None:
    cols = (Column("a", "A"), Column("n", "N", "int"), Column("w", "W", wide_only=True))
    text = render_table([{"a": "x", "n": 5, "w": "z"}, {"a": "yy", "n": 100, "w": "z"}], cols)
    assert text.splitlines() == ["A   N", "x     5", "yy  100"]
    assert "W" in render_table([{"a": "x", "n": 1, "w": "z"}], cols, wide=True)
