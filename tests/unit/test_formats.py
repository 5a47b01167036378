"""``formats.render_json``: the documents scripts read. Cost: milliseconds."""

from __future__ import annotations

import json
import math

import pytest

from factoryctl.formats import render_json


def test_render_json_is_the_same_document_with_one_record_per_line() -> None:
    doc = {
        "kind": "jobs",
        "meta": {"a": 1, "b": [1, 2], "c": {}},
        "items": [{"x": 1, "y": [1, {"z": None}]}, {"x": 2.5, "y": "s", "t": (1, 2)}],
        "empty": [],
        "when": object,  # not JSON: its str(), as before
        7: "a number key",
    }
    text = render_json(doc)
    assert json.loads(text) == json.loads(json.dumps(doc, default=str))
    lines = text.splitlines()
    assert '    {"x": 1, "y": [1, {"z": null}]},' in lines  # a record per line
    assert '  "kind": "jobs",' in lines and lines[0] == "{" and lines[-1] == "}"
    with pytest.raises(ValueError):
        render_json({"items": [{"u": math.nan}]})  # never NaN, which JSON has not


RECORDS = [
    {"name": "gpu00001", "state": "mixed", "u": 0.956613016, "n": 8, "none": None, "ok": True},
    {"reason": 'said "no" \\ then é, ☃ and \n', "nested": {"a": [1, 2.5, {"b": None}]}},
    {"big": 10**20, "neg": -0.0, "tiny": 1e-300, "t": (1, "x"), "when": object},
    {7: "a number key", 2.5: "a float key", True: "a bool key"},
]


@pytest.mark.parametrize("accelerated", [True, False])
def test_each_record_is_what_json_dumps_writes(
    accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept C encoder (or, without it, JSONEncoder.encode) writes each record as
    ``json.dumps(..., allow_nan=False, default=str)`` does, byte for byte."""
    if not accelerated:
        monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    lines = render_json({"items": RECORDS}).splitlines()[2:-2]
    want = [json.dumps(r, allow_nan=False, default=str) for r in RECORDS]
    assert [line.strip().rstrip(",") for line in lines] == want
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            render_json({"items": [{"ok": 1}, {"u": bad}]})
