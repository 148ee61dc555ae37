"""Channel pruning: calibration statistics, channel selection, least-squares reconstruction, surgery."""

from amc.pruning.channel import ChannelPruner
from amc.pruning.features import LayerStats, collect_stats

__all__ = ["ChannelPruner", "LayerStats", "collect_stats"]
