"""Stage `train`: fit the configured network on the snapshot's train split with Lightning.

Reads params `seed`, `model` (net, module, optimizer, loss: `_target_`s), `trainer`,
`allowed_targets` and `code`, and the snapshot. Writes models/candidate/
(safetensors weights, config.json, a model card) and reports/train/history.csv.
"""

import logging
import warnings

from closedloop.config import load_params
from closedloop.errors import run_stage
from closedloop.paths import CANDIDATE_DIR
from closedloop.training.train import train

# Two lines Lightning 2.6 prints on every run that say nothing about this one, silenced by
# name (everything else Lightning says stays): its advertisement for litlogger, and torch's
# FutureWarning about LeafSpec, raised inside Lightning's own _pytree (not our code).
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropLitloggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LITLOGGER_TIP)


def quiet_lightning() -> None:
    """Install the two precise filters above."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLitloggerTip())
    warnings.filterwarnings("ignore", message=LEAFSPEC, category=FutureWarning)


def main() -> None:
    quiet_lightning()
    card = train(load_params())
    if card is not None:
        stop = "stopped early" if card.stopped_early else "every epoch run"
        print(
            f"train: {card.parameters:,} parameters, {card.epochs} epochs ({stop}); shipped the "
            f"weights of epoch {card.best_epoch}, the best on {card.monitor} -> {CANDIDATE_DIR}/"
        )


if __name__ == "__main__":
    run_stage(main, __doc__)
