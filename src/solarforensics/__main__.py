"""`python -m solarforensics`: the same command line as the `solarforensics` script."""

from solarforensics.cli.main import main

main()
