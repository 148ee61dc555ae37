"""A user's own callbacks: `amc.search(callbacks=[...])` sees every episode after amc's own and may stop the
search; the best so far is exported, `amc show` says who stopped it, and `--resume` goes on to the plan."""

from __future__ import annotations

import amc
from amc.callbacks import Callback
from amc.run_index import describe_run

FAST = dict(agent="ddpg", episodes=5, warmup=1, calibration_images=100, seed=0)


class StopAfter(Callback):
    def __init__(self, episodes: int):
        self.episodes, self.seen = episodes, []

    def on_episode(self, record: dict) -> bool:
        self.seen.append((record["episode"], record["accuracy"]))
        return len(self.seen) >= self.episodes


def test_a_callback_stops_a_search_and_the_best_so_far_is_exported(tmp_path):
    run, stop = tmp_path / "run", StopAfter(2)
    result = amc.search("digits_cnn", "digits", out=run, callbacks=[stop], **FAST)
    assert [episode for episode, _ in stop.seen] == [0, 1] and len(result.episodes) == 2
    assert result.summary["stopped_early"] == {"by": ["StopAfter"], "planned": 5}
    assert result.summary["best_search_score"] == max(accuracy for _, accuracy in stop.seen)
    assert describe_run(run)["status"] == "finished (stopped after 2 of 5 episodes by StopAfter)"
    resumed = amc.search(out=run, resume=True)  # the plan is still five episodes
    assert len(resumed.episodes) == 5 and "stopped_early" not in resumed.summary
    assert describe_run(run)["status"] == "finished"


def test_a_callback_that_never_stops_changes_nothing(tmp_path):
    plain = amc.search("digits_cnn", "digits", out=tmp_path / "plain", **FAST)
    watched = amc.search("digits_cnn", "digits", out=tmp_path / "watched", callbacks=[StopAfter(99)], **FAST)
    assert [r["keep"] for r in watched.episodes] == [r["keep"] for r in plain.episodes]
    assert "stopped_early" not in watched.summary
