from __future__ import annotations

import hostlist
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


_PREFIXES = st.sampled_from(["gpu", "n", "node-", "a.b_", "gpu1x", "", "g"])


@given(
    st.lists(
        st.builds(
            lambda p, n, w: f"{p}{n:0{w}d}",
            _PREFIXES,
            st.integers(0, 1200),
            st.integers(1, 5),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_collect_equals_python_hostlist(names: list[str]) -> None:
    """The fast path for one prefix and one number width gives python-hostlist's answer;
    every other set (mixed prefixes, widths, digits in the prefix) goes to python-hostlist."""
    assert hostlists.collect(names) == str(hostlist.collect_hostlist(names))


def test_collect_fast_path_shapes() -> None:
    assert hostlists.collect(["gpu03", "gpu01", "gpu02", "gpu07", "gpu01"]) == "gpu[01-03,07]"
    assert hostlists.collect(["n9", "n10"]) == "n[9-10]"  # two widths: python-hostlist's
    assert hostlists.collect(["gpu01", "gpu01"]) == "gpu01"
