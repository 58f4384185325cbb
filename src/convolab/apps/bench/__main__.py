"""``python -m convolab.apps.bench [flags]``: the same as ``convolab bench``."""

import sys

from .command import main

sys.exit(main())
