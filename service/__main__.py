"""``python -m service``: the same as the ``rankd`` console script."""

import sys

from service import hugepages

hugepages.reexec(sys.argv[1:])  # before service.cli's imports (see service/hugepages.py)

from service.cli import main  # noqa: E402

main()
