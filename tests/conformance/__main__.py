"""``python -m tests.conformance MODULE...``: see harness.py."""

import sys

from .harness import main

sys.exit(main())
