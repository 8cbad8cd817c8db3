#!/usr/bin/env python
"""Train a SuperTransformer, retrain a SubTransformer, or profile one (``--profile``).

python train.py --configs=configs/wmt14.en-de/supertransformer/space0.yml
python train.py --configs=<sub>.yml --sub-configs=configs/<task>/subtransformer/common.yml --profile
"""

import sys

from hat.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
