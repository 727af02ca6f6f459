"""``python -m src.toyworld.build``: run the build stages (see src.toyworld.build.stages)."""

import sys

from src.toyworld.build.cli import main

if __name__ == "__main__":
    sys.exit(main())
