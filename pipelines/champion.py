"""Stage `champion`: the production model models/registry.yaml names, resolved and verified.

Writes models/champion/: the entry's weights, config and card fetched through DVC at its
recorded commit and checked against its hash, its training split (the drift reference) and
entry.json ({"present": false} before the first promotion).
"""

from closedloop.errors import run_stage
from closedloop.paths import CHAMPION_DIR, CHAMPION_ENTRY
from closedloop.registry.champion import build_champion


def main() -> None:
    champion = build_champion()
    if champion is not None:
        print(
            f"champion: {champion.version} (sha256 {champion.model_hash[:12]}, commit "
            f"{champion.commit[:12]}) -> {CHAMPION_DIR}/"
        )
    else:
        print(f"champion: no production model yet -> {CHAMPION_ENTRY}")


if __name__ == "__main__":
    run_stage(main, __doc__)
