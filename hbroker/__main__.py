from hbroker.cli import main

raise SystemExit(main())
