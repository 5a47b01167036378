"""``results.parse_columns``: a rollup answer as one dict per name, keyed by one label,
a pair of labels or more, with one more label carried. Cost: milliseconds."""

from __future__ import annotations

import pytest

from factoryctl.telemetry.results import UnexpectedSeries, parse_columns


def _answer(*series: tuple[dict[str, str], str]) -> dict[str, object]:
    return {
        "resultType": "vector",
        "result": [{"metric": m, "value": [1.0, v]} for m, v in series],
    }


PAIRS = _answer(
    ({"__name__": "held", "node": "n1", "job_id": "7", "user": "ada"}, "4"),
    ({"__name__": "held", "node": "n2", "job_id": "7", "user": "ada"}, "8"),
    ({"__name__": "held", "node": "n1", "job_id": "9"}, "2"),  # no user: ""
    ({"__name__": "held", "node": "n2", "job_id": "7", "user": "bob"}, "6"),  # again: last
)


def test_a_pair_of_labels_keys_each_series_and_carries_one_more() -> None:
    got = parse_columns(PAIRS, ("held",), ("node", "job_id"), "user")
    assert got.by_name == {"held": {("n1", "7"): 4.0, ("n2", "7"): 6.0, ("n1", "9"): 2.0}}
    assert got.carried == {("n1", "7"): "ada", ("n2", "7"): "bob", ("n1", "9"): ""}


def test_one_label_or_three_key_as_before() -> None:
    one = parse_columns(PAIRS, ("held",), ("node",))
    assert one.by_name == {"held": {"n1": 2.0, "n2": 6.0}} and one.carried == {}
    three = parse_columns(PAIRS, ("held", "other"), ("node", "job_id", "user"))
    assert three.by_name["held"][("n1", "9", "")] == 2.0 and three.by_name["other"] == {}
    assert len(three.by_name["held"]) == 4


def test_a_series_of_another_name_is_an_error_not_dropped() -> None:
    with pytest.raises(UnexpectedSeries, match="'gpu_up'"):
        parse_columns(
            _answer(({"__name__": "gpu_up", "node": "n1"}, "1")),
            ("held",),
            ("node", "job_id"),
        )
