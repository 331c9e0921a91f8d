"""Run the chroma-snapshot CLI from a checkout: ``python cli.py --help``. Holds no logic."""

from snapshot.cli import main

if __name__ == "__main__":
    main()
