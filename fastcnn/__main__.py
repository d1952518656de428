"""``python -m fastcnn``: the ``fastcnn`` command line."""
import sys

from .cli import main

sys.exit(main())
