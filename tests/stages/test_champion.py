"""The champion stage before the first promotion."""

from __future__ import annotations

import json

from closedloop.registry.registry import (
    empty_registry,
    save_registry,
)
from tests.conftest import REG, cli


# ------------------------------------------------------------------------ champion
def test_champion_without_production_writes_present_false(tmp_path):
    save_registry(empty_registry(), tmp_path / REG)
    proc = cli("champion", cwd=tmp_path, check=True)
    assert "no production model" in proc.stdout
    assert json.loads((tmp_path / "models/champion/entry.json").read_text()) == {"present": False}
