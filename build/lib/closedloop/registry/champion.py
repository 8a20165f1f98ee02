"""Stage `champion`: resolve the production model that models/registry.yaml names.

Writes models/champion/: the production entry's weights, config and card, its training split
(train.parquet, the drift reference) and entry.json. Before the first promotion entry.json is
{"present": false}. The files come through DVC at the entry's recorded commit and must match
its hash; otherwise the stage fails and the previous models/champion/ stays as it was.
"""

from __future__ import annotations

from pathlib import Path

from closedloop.artefacts.champion import ChampionEntry, write_no_champion
from closedloop.io import atomic_dir
from closedloop.paths import CHAMPION_DIR, CHAMPION_ENTRY, REGISTRY
from closedloop.registry.registry import load_registry, production_entry, resolve_model


def build_champion(
    registry: Path = REGISTRY, out_dir: Path = CHAMPION_DIR, repo_root: Path = Path(".")
) -> ChampionEntry | None:
    """Materialise the production entry into ``out_dir``; return it (None before the first)."""
    entry = production_entry(load_registry(registry))
    champion = None if entry is None else ChampionEntry.model_validate({"present": True, **entry})
    with atomic_dir(out_dir) as tmp:
        if champion is None:
            write_no_champion(tmp / CHAMPION_ENTRY.name)
        else:
            resolve_model(entry, tmp, repo_root)
            champion.write(tmp / CHAMPION_ENTRY.name)
    return champion
