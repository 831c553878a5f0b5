import sys

from thoth_pbx.cli.main import main

sys.exit(main())
