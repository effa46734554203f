from topology.cli import main

raise SystemExit(main())
