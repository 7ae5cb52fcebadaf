"""README's claims about the tests point at tests that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_named_in_the_when_things_go_wrong_table_exists():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### When things go wrong", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 11
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        names = re.findall(r"`([\w./]*)::(\w+)`", cell)
        assert names, row
        current = None
        for file, name in names:
            current = file or current
            source = (ROOT / "tests" / current).read_text()
            assert f"def {name}(" in source, f"{current}::{name} (README) does not exist"
