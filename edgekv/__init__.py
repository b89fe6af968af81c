"""EdgeKV: an edge-first replicated key-value store. This package is the node."""

__version__ = "0.1.0"

__all__ = ["__version__"]
