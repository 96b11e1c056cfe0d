"""``python -m service``: the same as the ``rankd`` console script."""

from service.cli import main

main()
