"""``python -m childkit.launcher CONTROL_FD PARENT_PID``: run the launcher template."""

import sys

from childkit.launcher._template import main

sys.exit(main(sys.argv))
