"""`python -m pumpctl` runs the command line."""

from pumpctl.cli import main

main()
