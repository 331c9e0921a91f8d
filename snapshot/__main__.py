"""``python -m snapshot``: the same CLI as the ``chroma-snapshot`` command."""

from snapshot.cli import main

main()
