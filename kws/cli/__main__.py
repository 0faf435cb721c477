"""`python -m kws.cli`."""

from kws.cli import main

main()
