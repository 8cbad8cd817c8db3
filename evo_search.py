#!/usr/bin/env python
r"""Search a SubTransformer under a latency limit (HAT's evolutionary search).

python evo_search.py --configs=configs/wmt14.en-de/supertransformer/space0.yml \
    --evo-configs=configs/wmt14.en-de/evo_search/wmt14ende_titanxp.yml
(docs/search.md lists the keys; any key can also be given on the command line)
"""

import sys

from hat.search.cli import main

if __name__ == "__main__":
    sys.exit(main())
