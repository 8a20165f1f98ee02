"""Stage `collect`: a validated snapshot of the dataset, with the declared splits.

Reads params `seed`, `dataset`, `allowed_targets` and `code`, the table `dataset.source`
returns (a built-in, your files under data/raw/, or your own function) and the exported
feedback in data/feedback/. Writes artifacts/snapshot/ (one Parquet file per split, schema.json) and
reports/quarantine.parquet (every rejected feedback row, with its reason).
"""

import logging

from closedloop.config import load_params
from closedloop.data.collect import collect
from closedloop.errors import run_stage
from closedloop.paths import SNAPSHOT_DIR


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    schema = collect(load_params())
    print(f"collect: snapshot {schema.data_hash[:12]} -> {SNAPSHOT_DIR}/")


if __name__ == "__main__":
    run_stage(main, __doc__)
