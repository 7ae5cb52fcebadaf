from inception.cli import main

raise SystemExit(main())
