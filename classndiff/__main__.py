"""`python -m classndiff …` is the `classndiff` command."""

from classndiff.cli.main import main

raise SystemExit(main())
