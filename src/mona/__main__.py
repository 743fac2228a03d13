"""`python -m mona` is the `mona` command (also what torchrun launches)."""

from mona.cli.main import main

raise SystemExit(main())
