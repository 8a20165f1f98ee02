"""The DVC stages of the loop, one thin module each (`python -m pipelines.<stage>`).

Each reads params.yaml, calls the library (`closedloop`) and writes its fixed outputs. The
library never imports this package.

A stage runs the library and the user packages of the checkout it belongs to, the code its
dvc.yaml deps declare, even where another checkout is installed (a scratch clone, a test's
copy): this checkout's src/ goes first on the import path.

Before any stage imports torch, the CPU's numerical path from params.yaml's `numerics` goes
into the environment (MKL and ATen read it only once, at their first call), so a stage gives
the same bytes on any x86-64 machine: see closedloop.numerics.
"""

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_SRC = str(_ROOT / "src")
if sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)

from closedloop.numerics import pin_from_params  # noqa: E402  (needs src/ on the path)

pin_from_params(Path("params.yaml"))
