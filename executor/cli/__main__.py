"""`python -m executor.cli` is the same as the `runbook` command."""

from executor.cli import main

main()
