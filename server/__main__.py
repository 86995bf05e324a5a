"""Entry point of `python -m server`."""

import sys

if __name__ == "__main__":  # guarded: spawned validation workers import this module too, and need none of it
    from server.cli import main

    sys.exit(main())
