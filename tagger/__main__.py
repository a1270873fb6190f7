"""``python -m tagger``: the same as the installed ``tagger`` command."""

from tagger.cli import main

raise SystemExit(main())
