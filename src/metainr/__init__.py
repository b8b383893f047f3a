"""metainr: meta-learned implicit neural representations.

Heavy modules (torch, the networks, the meta-learning core) are imported lazily so that
``metainr --help`` stays instant; import them from their sub-packages, e.g.
``from metainr.meta import MetaLearner``.
"""

__version__ = "0.1.0"

from metainr.errors import MetaINRError  # noqa: E402  (light, no torch)

__all__ = ["MetaINRError", "__version__"]
