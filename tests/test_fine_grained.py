import json

import pytest
import torch

import amc
from amc import models
from amc.data import load_dataset
from amc.errors import AmcError
from amc.pruning.fine_grained import MagnitudePruner, WeightGraph, load_sparse
from amc.search import SearchConfig


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _nonzero_params(model):
    return sum(int((p != 0).sum()) for p in model.parameters())


def test_magnitude_pruner_keeps_exactly_the_largest_weights():
    model = models.create("digits_cnn", 10, weights=models.bundled_weights("digits_cnn")).eval()
    graph = WeightGraph(model, (1, 8, 8))
    keep = [max(1, d.channels // 3) for d in graph.decisions]
    pruned, masks = MagnitudePruner(model, graph).prune(keep)
    original, modules = dict(model.named_modules()), dict(pruned.named_modules())
    for d, k in zip(graph.decisions, keep):
        w = modules[d.consumer].weight
        assert int((w != 0).sum()) == k
        smallest_kept = original[d.consumer].weight.abs()[masks[d.consumer]].min()
        largest_dropped = original[d.consumer].weight.abs()[~masks[d.consumer]].max()
        assert smallest_kept >= largest_dropped
    assert _nonzero_params(pruned) == graph.params(keep)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  models.create("digits_cnn", 10, weights=models.bundled_weights(
                                                      "digits_cnn")).state_dict().values()))  # original untouched


def test_global_counts_keep_the_weights_largest_against_their_layers_norm():
    # NNCF's global magnitude rule, computed here by hand: one threshold on |w| / ||W||_2 over every layer
    model = models.create("digits_cnn", 10, weights=models.bundled_weights("digits_cnn")).eval()
    graph = WeightGraph(model, (1, 8, 8))
    pruner, modules = MagnitudePruner(model, graph), dict(model.named_modules())
    normalised = [modules[d.consumer].weight.detach().abs().flatten() / modules[d.consumer].weight.detach().norm()
                  for d in graph.decisions]
    everything = torch.cat(normalised).sort(descending=True).values
    for total in (0, 1, 500, everything.numel() // 7, everything.numel()):
        counts = pruner.global_counts(total)
        assert sum(counts) == total
        if 0 < total < everything.numel() and everything[total - 1] > everything[total]:  # no tie at the cut
            assert counts == [int((n >= everything[total - 1]).sum()) for n in normalised]
    densities = [c / d.channels for c, d in zip(pruner.global_counts(everything.numel() // 7), graph.decisions)]
    assert max(densities) - min(densities) > 0.1  # an allocation: big layers lose most


def test_fine_grained_search_meets_the_params_budget_and_writes_a_smaller_sparse_file(tmp_path, digits):
    config = SearchConfig(method="fine-grained", target="params", ratio=0.3, lbound=0.05, episodes=6, warmup=3,
                          calibration_images=200)
    result = amc.search(config=config, out=tmp_path / "run", data=digits)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["params_ratio"] <= 0.3 + 1e-9
    dense = amc.load_pruned(tmp_path / "run")
    assert _nonzero_params(dense) == summary["params"]
    assert summary["macs_ratio"] == pytest.approx(1.0)  # dense kernels do the same work: said, not hidden
    assert summary["sparse_bytes"] < 0.6 * summary["dense_bytes"]
    state = load_sparse(tmp_path / "run" / "model_sparse.pt")
    for key, value in dense.state_dict().items():
        assert torch.equal(state[key], value), key
    assert result.best_val_top1 == summary["heldout_top1"]


def test_accuracy_guaranteed_fine_grained_search_runs_without_a_budget(tmp_path, digits):
    config = SearchConfig(method="fine-grained", reward="acc-params", lbound=0.05, episodes=5, warmup=2,
                          calibration_images=200)
    amc.search(config=config, out=tmp_path / "run", data=digits)
    log = [json.loads(x) for x in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    assert all(r["reward"] < 0 for r in log)  # -error * log(params)
    assert min(r["params_ratio"] for r in log) < 0.7


def test_fine_grained_with_a_macs_target_is_refused():
    with pytest.raises(AmcError, match="--target params"):
        SearchConfig(method="fine-grained", target="macs")


def test_fine_tuning_a_fine_grained_run_keeps_it_sparse(tmp_path, digits):
    from amc.finetune import finetune, load_finetuned
    from amc.train import TrainConfig

    config = SearchConfig(method="fine-grained", target="params", ratio=0.3, lbound=0.05, agent="uniform",
                          calibration_images=200)
    amc.search(config=config, out=tmp_path / "run", data=digits)
    before = amc.load_pruned(tmp_path / "run")
    finetune(tmp_path / "run", TrainConfig(epochs=1, batch_size=64, lr=0.02), data=digits)
    after = load_finetuned(tmp_path / "run")
    for (name, a), (_, b) in zip(before.named_parameters(), after.named_parameters()):
        if name.endswith("weight") and a.dim() > 1:
            assert torch.equal(a == 0, b == 0), name  # the same weights are zero, nothing regrew
    assert not all(torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))  # it trained
    assert (tmp_path / "run" / "model_finetuned_sparse.pt").exists()


def test_iterative_schedule_lowers_density_stage_by_stage_from_the_previous_stage(tmp_path, digits):
    from amc.iterative import iterative_fine_grained
    from amc.train import TrainConfig

    config = SearchConfig(agent="uniform", lbound=0.05, calibration_images=200)
    result = iterative_fine_grained(config, [0.5, 0.3], tmp_path / "sched", data=digits,
                                    train_config=TrainConfig(epochs=1, batch_size=64, lr=0.02))
    first, second = result["stages"]
    assert first["params_ratio"] <= 0.5 + 1e-9 and second["params_ratio"] <= 0.3 + 1e-9
    assert second["params"] < first["params"]
    stage2 = json.loads((tmp_path / "sched" / "stage2" / "config.json").read_text())["search"]
    assert stage2["weights"].endswith("stage1/model_finetuned.pt")
    # whatever stage 1 zeroed stays zero in stage 2
    one, two = amc.load_pruned(tmp_path / "sched" / "stage1"), amc.load_pruned(tmp_path / "sched" / "stage2")
    from amc.finetune import load_finetuned
    one = load_finetuned(tmp_path / "sched" / "stage1")
    for (name, a), (_, b) in zip(one.named_parameters(), two.named_parameters()):
        if name.endswith("weight") and a.dim() > 1:
            assert bool(((a == 0) <= (b == 0)).all()), name
    # a second call finds every stage done and changes nothing
    again = iterative_fine_grained(config, [0.5, 0.3], tmp_path / "sched", data=digits,
                                   train_config=TrainConfig(epochs=1, batch_size=64, lr=0.02))
    assert again["stages"] == result["stages"]
