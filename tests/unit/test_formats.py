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
