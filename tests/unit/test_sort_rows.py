"""``views.sort_rows``: natural order (gpu2 before gpu10) with its fast path for names of
one prefix and one number width. Cost: about a second (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from factoryctl.views import NODE_COLUMNS, _natural, sort_rows

NAMES = st.lists(
    st.one_of(
        st.builds(lambda n: f"gpu{n:05d}", st.integers(0, 99_999)),  # the fast path
        st.builds(lambda n: f"gpu{n}", st.integers(0, 300)),  # widths differ: natural
        st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True),
    ),
    max_size=40,
)


@given(NAMES, st.booleans())
def test_the_order_is_natural_whichever_path(names: list[str], descending: bool) -> None:
    rows = [{"name": n, "n": i} for i, n in enumerate(names)]
    got = sort_rows(rows, "-name" if descending else "name", NODE_COLUMNS)
    want = sorted(rows, key=lambda r: _natural(r["name"]), reverse=descending)
    assert [r["name"] for r in got] == [r["name"] for r in want]


def test_one_prefix_one_width_and_otherwise() -> None:
    same = [{"name": f"gpu{n:03d}"} for n in (10, 2, 100, 1)]
    assert [r["name"] for r in sort_rows(same, "name", NODE_COLUMNS)] == [
        "gpu001", "gpu002", "gpu010", "gpu100"
    ]  # fmt: skip
    mixed = [{"name": n} for n in ("gpu10", "gpu9", "gpu100", "gpu1")]
    assert [r["name"] for r in sort_rows(mixed, "name", NODE_COLUMNS)] == [
        "gpu1", "gpu9", "gpu10", "gpu100"
    ]  # fmt: skip
