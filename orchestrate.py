#!/usr/bin/env python3
"""quantwarehouse command line: `python orchestrate.py --help`."""

import sys

from quantwarehouse.cli import main

if __name__ == "__main__":
    sys.exit(main())
