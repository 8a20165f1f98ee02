"""Stage `train`: fit the configured network on the snapshot's train split with Lightning.

Reads params `seed`, `model` (net, module, optimizer, loss: `_target_`s), `trainer`,
`allowed_targets` and `code`, and the snapshot. Writes models/candidate/
(safetensors weights, config.json, a model card) and reports/train/history.csv.
"""

from closedloop.config import load_params
from closedloop.errors import run_stage
from closedloop.paths import CANDIDATE_DIR
from closedloop.training.train import train


def main() -> None:
    card = train(load_params())
    if card is not None:
        stop = "stopped early" if card.stopped_early else "every epoch run"
        print(
            f"train: {card.parameters:,} parameters, {card.epochs} epochs ({stop}); shipped the "
            f"weights of epoch {card.best_epoch}, the best on {card.monitor} -> {CANDIDATE_DIR}/"
        )


if __name__ == "__main__":
    run_stage(main, __doc__)
