"""``fastcnn.nn.init``: the same functions as :mod:`fastcnn.init` (as ``torch.nn.init``)."""
from ..init import *  # noqa: F401,F403
from ..init import __all__  # noqa: F401
