"""`python -m tests.mutation`: see runner.py and docs/development.md."""

from tests.mutation.runner import main

raise SystemExit(main())
