from commpro.cli import main

raise SystemExit(main())
