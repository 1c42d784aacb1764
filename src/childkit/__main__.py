"""``python -m childkit``: the command-line tool (see :mod:`childkit.cli`)."""

from childkit.cli import main

raise SystemExit(main())
