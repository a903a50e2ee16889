"""``python -m mixjax`` runs the command line (the same as ``mixjax``)."""

import sys

from mixjax.cli import main

sys.exit(main())
