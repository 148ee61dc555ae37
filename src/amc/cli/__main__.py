"""`python -m amc.cli`."""

from amc.cli import main

main()
