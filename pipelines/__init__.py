"""The DVC stages of the loop, one thin module each (`python -m pipelines.<stage>`).

Each reads params.yaml, calls the library (`closedloop`) and writes its fixed outputs. The
library never imports this package.

A stage runs the library and the user packages of the checkout it belongs to, the code its
dvc.yaml deps declare, even where another checkout is installed (a scratch clone, a test's
copy): this checkout's src/ goes first on the import path.
"""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")
if sys.path[:1] != [_SRC]:
    sys.path.insert(0, _SRC)
