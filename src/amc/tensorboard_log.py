"""Optional TensorBoard logging of a search (`amc search --tensorboard`): one point per episode.

`tensorboard --logdir RUN_DIR/tensorboard` shows reward, accuracy and the best so far, the cost ratios, the
images each candidate was scored on, where the episode's time went and the agent's losses and noise. The
run's own episodes.jsonl stays the record; this is a view of it, written as the search goes.
"""

from __future__ import annotations

from pathlib import Path

from amc.errors import AmcError

LOG_DIR = "tensorboard"


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AmcError("--tensorboard needs the tensorboard package: pip install 'amc-compress[tensorboard]' "
                       "(or drop --tensorboard)") from None
    return SummaryWriter


class TensorBoardLog:
    @staticmethod
    def check_available() -> None:
        """Refuse --tensorboard before any work when the package is missing."""
        _summary_writer()

    def __init__(self, out: Path, start_episode: int):
        SummaryWriter = _summary_writer()
        # purge_step: a resumed run drops what an interrupted one wrote past its saved state
        self.writer = SummaryWriter(log_dir=str(out / LOG_DIR), purge_step=start_episode or None)

    def episode(self, record: dict) -> None:
        step = record["episode"]
        for key in ("reward", "accuracy", "best_reward", "macs_ratio", "params_ratio", "seconds", "scored_images"):
            if key in record:
                self.writer.add_scalar(f"episode/{key}", record[key], step)
        for group in ("timing", "agent"):
            for key, value in record.get(group, {}).items():
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def close(self, summary: dict) -> None:
        lines = [f"| {key} | {summary[key]} |" for key in ("best_episode", "best_val_top1", "test_top1", "macs_ratio",
                                                          "params_ratio", "episodes") if key in summary]
        self.writer.add_text("summary", "| figure | value |\n| --- | --- |\n" + "\n".join(lines))
        self.writer.close()
