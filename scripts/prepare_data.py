#!/usr/bin/env python
"""Download and preprocess a HAT translation task into a fairseq data-bin.

Example: ``python scripts/prepare_data.py --task iwslt14.de-en --out data/iwslt14.de-en
--raw-dir ~/corpora/iwslt14 --workers 8``; ``--list-files`` shows what --raw-dir must hold.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hat.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
