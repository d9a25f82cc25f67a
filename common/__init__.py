"""Infrastructure every package shares: atomic file writes, the named registry, the torch device and batching.

Nothing here knows what a network is or what it costs; ``blocks``, ``latency``, ``search``, ``donna`` and
``baselines`` all import from here, and this package imports none of them.
"""
