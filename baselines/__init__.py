"""Gradient-based baselines over the same block space, emitting the same IR: PC-DARTS and DSO-NAS.

The searchers ``"pc-darts"`` and ``"dso-nas"`` are entry points of ``search``'s registry (pyproject.toml):
listed without importing this package, imported on first use; importing it registers them too.
"""

from baselines.apg import APGNAG, soft_threshold
from baselines.costs import OpCost, block_macs, macs_op_cost, table_op_cost
from baselines.dsonas import DSONASConfig, DSONASNet, DSONASSearcher
from baselines.mixed_supernet import MixedLayer, SuperNet, SuperSlot, channel_shuffle, slot_ops
from baselines.pcdarts import PCDartsConfig, PCDartsNet, PCDartsSearcher
from baselines.project import project_dsonas, project_pcdarts

__all__ = [
    "APGNAG", "DSONASConfig", "DSONASNet", "DSONASSearcher", "MixedLayer", "OpCost", "PCDartsConfig",
    "PCDartsNet", "PCDartsSearcher", "SuperNet", "SuperSlot", "block_macs", "channel_shuffle",
    "macs_op_cost", "project_dsonas", "project_pcdarts", "slot_ops", "soft_threshold", "table_op_cost",
]
