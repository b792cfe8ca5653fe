"""`python -m watcher` is the `fireworks-watcher` command."""

import sys

from watcher.cli import main

sys.exit(main())
