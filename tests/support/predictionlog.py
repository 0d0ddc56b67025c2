"""Reading a prediction log folder back."""
from __future__ import annotations

import json


def read_log(directory):
    """Every line of every file; a line that does not parse fails the test."""
    lines = []
    for path in sorted(directory.glob("*.jsonl")):
        content = path.read_bytes()
        assert not content or content.endswith(b"\n"), f"{path.name} ends in a partial line"
        lines += [json.loads(line) for line in content.splitlines()]
    return lines
