"""`python -m training world|PART ...` (what `accelerate launch -m training ...` runs): the
arguments of `genie train`, its one-line errors and exit code 2."""

import sys

from training.cli import main

sys.exit(main())
