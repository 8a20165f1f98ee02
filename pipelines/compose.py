"""Stage `compose`: conf/ (Hydra) -> params.yaml, the one resolved config every stage reads.

DVC composes Hydra itself only under `dvc exp run` (with `hydra.enabled` in .dvc/config),
never under `dvc repro`. So this stage, which depends on conf/ and writes params.yaml:

- under `dvc repro` composes conf/ and writes params.yaml, so a YAML edit takes effect;
- under `dvc exp run` (DVC sets DVC_EXP_NAME) keeps the params.yaml DVC has just composed
  from conf/ plus the `-S` overrides, and only validates and normalises it. Recomposing here
  would silently drop the overrides.

An experiment's params.yaml survives: under `dvc exp run`, params that differ from conf/
alone are marked with the experiment's name (a comment line), and under `dvc repro` a marked
params.yaml that conf/ does not compose to is refused in one line, never silently replaced
(`closedloop exp save <name>` writes it into conf/; closedloop.config.experiments).

Either way it adds `code`: a hash of each user package in src/ (this stage depends on all
of src/), so the stages that build `_target_`s rerun when that code changes.

    python -m pipelines.compose                          # what `dvc repro` runs
    python -m pipelines.compose dataset=digits --print   # preview a composition, write nothing
"""

from __future__ import annotations

import argparse
import sys

from closedloop.config import compose_params, under_experiment
from closedloop.errors import run_stage
from closedloop.io import write_text
from closedloop.paths import PARAMS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.compose", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model.optimizer.lr=0.01"
    )
    parser.add_argument("--print", action="store_true", help="print instead of writing")
    args = parser.parse_args(argv)
    text = compose_params(args.overrides)
    if args.print:
        sys.stdout.write(text)
        return
    write_text(PARAMS, text)
    source = "params.yaml composed by `dvc exp run`" if under_experiment() else "conf/"
    print(f"compose: {source} -> {PARAMS}")


if __name__ == "__main__":
    run_stage(main)
