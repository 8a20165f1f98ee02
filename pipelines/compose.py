"""Stage `compose`: the bridge from conf/ (Hydra) to params.yaml (DVC).

DVC composes Hydra itself only under `dvc exp run` (with `hydra.enabled` in .dvc/config),
and never under `dvc repro`. So this stage, which depends on conf/ and writes params.yaml:

- under `dvc repro` composes conf/ and writes params.yaml, so a YAML edit takes effect;
- under `dvc exp run` (DVC sets DVC_EXP_NAME) keeps the params.yaml DVC has just composed
  from conf/ plus the `-S` overrides, and only validates and normalises it. Recomposing here
  would silently drop the overrides.

Either way the file is validated and written in one canonical form.

    python -m pipelines.compose                      # what `dvc repro` runs
    python -m pipelines.compose dataset=digits --print   # preview a composition, write nothing
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from pipelines.config import compose, dump, validate
from pipelines.io import run_stage, write_text
from pipelines.paths import PARAMS


def under_experiment() -> bool:
    """True inside `dvc exp run`, where DVC has already composed params.yaml."""
    return bool(os.environ.get("DVC_EXP_NAME"))


def build(overrides: list[str]) -> dict:
    if under_experiment() and not overrides and PARAMS.exists():
        return validate(yaml.safe_load(PARAMS.read_text()))
    return compose(overrides)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.compose", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model.lr=0.01 dataset=digits"
    )
    parser.add_argument(
        "--print", action="store_true", help="print the composition instead of writing params.yaml"
    )
    args = parser.parse_args(argv)
    text = dump(build(args.overrides))
    if args.print:
        sys.stdout.write(text)
        return
    write_text(PARAMS, text)
    source = "params.yaml composed by `dvc exp run`" if under_experiment() else "conf/"
    print(f"compose: {source} -> {PARAMS}")


if __name__ == "__main__":
    run_stage(main)
