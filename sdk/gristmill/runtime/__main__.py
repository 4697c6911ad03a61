from gristmill.runtime.cli import main

raise SystemExit(main())
