"""``python -m hat.download data --task <task>`` / ``python -m hat.download models ...``."""

import sys

from hat.download.cli import main

sys.exit(main())
