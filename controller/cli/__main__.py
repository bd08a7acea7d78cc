"""`python -m controller.cli`: the `modelrollout` command."""

import sys

from controller.cli.main import app

sys.exit(app())
