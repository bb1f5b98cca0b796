"""`python -m classndiff …` is the `classndiff` command."""

from .cli import main

raise SystemExit(main())
