"""benchmarks/peer_nncf.py: the rows and the install line without NNCF, NNCF's ratio arithmetic, and with NNCF
(the optional extra) its rows on the digits CNN at an exact count of kept weights, fine-tuned with the mask held."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the benchmarks import each other by module name, as scripts do
    sys.path.insert(0, str(BENCHMARKS))


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--model", "digits_cnn", "--data", "digits", "--ratio", "0.2", "--out", str(tmp_path / "nncf"), *extra]


def test_rows_pair_each_allocation_with_its_recalibrated_twin():
    from peer_nncf import NNCF_ROWS, ROWS

    assert NNCF_ROWS == ("nncf-global", "nncf-global+bn", "nncf-local", "nncf-local+bn")
    assert {name: row.source for name, row in ROWS.items() if name not in NNCF_ROWS} == {
        "amc-uniform": "uniform", "amc-uniform+bn": "uniform", "amc-search+bn": "search",
        "amc-search+bn-uniform": "search", "amc-default+bn": "search"}
    assert all(row.recalibrate == ("+bn" in name) for name, row in ROWS.items())
    assert dict(ROWS["amc-search+bn-uniform"].agent_options) == {"anchor": "uniform"}
    # the default row is what `amc search` runs when no agent is named, whatever that becomes
    from amc.config import default_agent

    assert ROWS["amc-default+bn"].agent == default_agent("acc", 1) != ROWS["amc-search+bn"].agent == "ddpg"
    assert [ROWS[n].mode for n in NNCF_ROWS] == ["global", "global", "local", "local"]


def test_without_nncf_an_nncf_row_is_a_one_line_error_and_amc_rows_still_run(tmp_path, monkeypatch, capsys):
    import peer_nncf

    from amc.errors import AmcError

    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed, whether it is or not
    with pytest.raises(AmcError) as raised:
        peer_nncf.available(["nncf-global", "amc-uniform"])
    assert "pip install nncf" in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(SystemExit) as exited:
        peer_nncf.main(_args(tmp_path, "--methods", "nncf-local"))
    assert "pip install nncf" in str(exited.value)
    assert not (tmp_path / "nncf").exists()  # refused before anything was loaded or written
    # asked for nothing in particular: amc's rows, and a note on why the nncf ones are left out
    assert peer_nncf.available(None) == ["amc-uniform", "amc-uniform+bn", "amc-search+bn", "amc-search+bn-uniform",
                                         "amc-default+bn"]
    assert "pip install nncf" in capsys.readouterr().out
    assert peer_nncf.available(["amc-uniform"]) == ["amc-uniform"]


def test_nncf_ratios_keep_the_asked_count_by_nncf_own_arithmetic():
    from nncf_masks import _removed, global_ratio, local_kept, local_ratio

    for total, keep in [(130592, 25649), (850000, 163000), (10, 0), (10, 9)]:
        assert total - _removed(total, global_ratio(total, keep)) == keep
    with pytest.raises(ValueError):
        global_ratio(10, 10)  # NNCF always removes at least one weight
    sizes = [288, 18432, 36864, 73728, 1280]
    for keep in (25649, 1000, 130000):
        ratio = local_ratio(sizes, keep)
        assert local_kept(sizes, ratio) <= keep < local_kept(sizes, ratio - 1e-9)  # the most it can keep


@pytest.mark.slow
def test_nncf_rows_on_the_digits_cnn_keep_the_budget_and_a_masked_finetune_keeps_their_zeros(tmp_path):
    pytest.importorskip("nncf", reason="NNCF is the optional extra `nncf` (pip install nncf)")
    import peer_nncf

    from amc.pruning.fine_grained import WeightGraph

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = peer_nncf.parse_args(_args(tmp_path, "--methods", "nncf-global", "nncf-local+bn",
                                          "--finetune-epochs", "1"))
        rows = {r["method"]: r for r in peer_nncf.run(args)}
    finally:
        torch.set_num_threads(threads)
    from amc import models

    original = models.create("digits_cnn", num_classes=10, weights=models.bundled_weights("digits_cnn"))
    graph = WeightGraph(original, (1, 8, 8))
    budget = 0.2 * graph.total_params
    target = int(budget - (graph.total_params - sum(d.channels for d in graph.decisions)))
    layers = {d.consumer for d in graph.decisions}
    for name, row in rows.items():
        saved = torch.load(Path(row["run_dir"]) / peer_nncf.PRUNED_FILE, weights_only=True)
        state, masks = saved["state_dict"], saved["masks"]
        assert set(masks) == layers  # NNCF prunes exactly the weights amc's fine-grained mode decides on
        zeros = sum(int((state[f"{layer}.weight"] == 0).sum()) for layer in layers)
        assert row["params"] == graph.total_params - zeros == graph.params(row["keep"]) <= budget
        assert row["kept_weights"] == sum(int(m.sum()) for m in masks.values())
        if name == "nncf-global":
            assert row["kept_weights"] == target and row["weights_off_target"] == 0
        else:  # one ratio for every layer: the most weights at or under the target
            assert row["kept_weights"] <= target
        densities = [int(masks[d.consumer].sum()) / d.channels for d in graph.decisions]
        if name.startswith("nncf-local"):
            assert max(densities) - min(densities) < 0.01  # the same share of every layer
        else:
            assert max(densities) - min(densities) > 0.1  # one threshold over all layers

        tuned = torch.load(Path(row["run_dir"]) / "finetune-epochs1-seed0.pt", weights_only=True)["state_dict"]
        for layer, mask in masks.items():
            before, after = state[f"{layer}.weight"], tuned[f"{layer}.weight"]
            assert after[~mask].count_nonzero() == 0
            assert not torch.equal(after[mask], before[mask])
        ft = row["finetune"]["epochs1-seed0"]
        assert ft["mask_held"] and 0 <= ft["test_top1"] <= 1
    table = (tmp_path / "nncf" / "table.md").read_text()
    assert "nncf-global" in table and "after 1-epoch FT" in table


def test_the_default_row_is_the_knapsack_within_the_budget(tmp_path):
    import peer_nncf

    args = peer_nncf.parse_args(_args(tmp_path, "--methods", "amc-default+bn", "amc-uniform+bn", "--threads", "1"))
    rows = {r["method"]: r for r in peer_nncf.run(args)}
    default, uniform = rows["amc-default+bn"], rows["amc-uniform+bn"]
    assert default["agent"] == "knapsack" and default["episodes"] == 1
    assert default["params"] <= default["budget_params"] and default["weights_off_target"] <= 0
    assert len(set(default["densities"])) > 1  # an allocation, not one density everywhere
    assert default["keep"] != uniform["keep"]
