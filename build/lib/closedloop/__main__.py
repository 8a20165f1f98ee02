"""`python -m closedloop`: the same command line as the `closedloop` console script."""

from closedloop.cli import main

main()
