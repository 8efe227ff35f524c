"""`python -m ecrm` is the `ecrm` command."""

from ecrm.cli import main

raise SystemExit(main())
