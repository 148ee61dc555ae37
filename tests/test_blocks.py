"""--drop-blocks: a residual block's decision may keep 0 channels, which removes the block from the exported network."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import amc
from amc import models
from amc.agents.knapsack import allocate
from amc.blocks import DroppedBlock, stage_cap
from amc.cost import count_macs, count_params
from amc.env import Budget, CompressionEnv, EnvConfig
from amc.errors import AmcError
from amc.graph import LayerGraph
from amc.policy import Policy
from amc.pruning import ChannelPruner

CIFAR = (3, 32, 32)


@pytest.fixture(scope="module")
def resnet20():
    return models.create("resnet20").eval()


def _random_actions(env: CompressionEnv, rng: np.random.Generator) -> dict:
    env.reset()
    while True:
        _, _, done, _, info = env.step([rng.uniform(0, 1)])
        if done:
            return info


def test_identity_blocks_whose_branch_is_one_decision_are_found_and_grouped_into_stages(resnet20):
    graph = LayerGraph(resnet20, CIFAR)
    # layer2.0 and layer3.0 subsample and widen (a padded shortcut): they stay; every other block may go
    assert [b.name for b in graph.blocks] == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1",
                                              "layer3.2"]
    assert sorted(graph.stage_blocks.values()) == [3, 3, 3]
    assert {graph.decisions[b.decision].consumer for b in graph.blocks} == {f"{b.name}.conv2" for b in graph.blocks}
    v2 = LayerGraph(models.create("mobilenet_v2").eval(), CIFAR)
    assert len(v2.blocks) == 10  # the stride-1 inverted residuals with equal in/out channels
    assert LayerGraph(models.create("plain20").eval(), CIFAR).blocks == []  # no shortcut, no block to drop
    # at most a share of a stage, never all of it
    assert [stage_cap(n, 0.5) for n in (1, 2, 3, 9)] == [0, 1, 1, 4] and stage_cap(3, 0.99) == 2


@pytest.mark.parametrize("name,coupled", [("resnet20", False), ("mobilenet_v2", False), ("mobilenet_v2", True)])
def test_the_cost_model_is_exact_for_networks_with_blocks_dropped(name, coupled):
    model = models.create(name).eval()
    graph = LayerGraph(model, CIFAR, group_coupled=coupled)
    keep = [max(1, c // 2) for c in graph.full_keep()]
    for block in graph.blocks[::2]:
        keep[block.decision] = 0
    pruned, _ = ChannelPruner(model, graph, None, reconstruct=False).prune(keep)
    assert sum(isinstance(m, DroppedBlock) for m in pruned.modules()) == len(graph.blocks[::2])
    assert graph.macs(keep) == count_macs(pruned, CIFAR)
    assert graph.params(keep) == count_params(pruned)
    assert pruned(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_a_dropped_block_is_the_identity(resnet20):
    # with its branch's last norm zeroed the block adds nothing: the original and the dropped network agree
    model = copy.deepcopy(resnet20)
    with torch.no_grad():
        model.layer2.get_submodule("1").bn2.weight.zero_()
        model.layer2.get_submodule("1").bn2.bias.zero_()
    graph = LayerGraph(model, CIFAR)
    keep = graph.full_keep()
    keep[next(b.decision for b in graph.blocks if b.name == "layer2.1")] = 0
    pruned, _ = ChannelPruner(model, graph, None, reconstruct=False).prune(keep)
    assert isinstance(pruned.layer2.get_submodule("1"), DroppedBlock)
    x = torch.randn(4, *CIFAR)
    torch.testing.assert_close(pruned(x), model(x))


def test_the_environment_drops_blocks_within_the_budget_and_each_stages_share(resnet20):
    graph = LayerGraph(resnet20, CIFAR)
    rng = np.random.default_rng(0)
    plain = CompressionEnv(Budget(graph, EnvConfig(ratio=0.3, lbound=0.2)), lambda keep: 0.5)
    assert all(k > 0 for k in _random_actions(plain, rng)["keep_counts"])  # no drops unless asked
    env = CompressionEnv(Budget(graph, EnvConfig(ratio=0.3, lbound=0.2, drop_blocks=True)), lambda keep: 0.5)
    assert env.budget.min_ratio() < plain.budget.min_ratio()
    assert env.config.action_low == 0.0 and plain.config.action_low == 0.2
    dropped = 0
    for _ in range(60):
        info = _random_actions(env, rng)
        keep = info["keep_counts"]
        assert info["macs"] <= env.budget.limit
        for stage, cap in env.budget.drop_caps.items():
            assert sum(keep[i] == 0 for i, s in enumerate(env.budget.stage) if s == stage) <= cap
        assert all(k > 0 for k, s in zip(keep, env.budget.stage) if s is None)
        dropped += sum(k == 0 for k in keep)
    assert dropped > 0
    # a budget under what channels alone can reach: refused without drops, met with them
    low = plain.budget.min_ratio() - 0.05
    with pytest.raises(AmcError, match="cannot be met"):
        CompressionEnv(Budget(graph, EnvConfig(ratio=low, lbound=0.2)), lambda keep: 0.5)
    tight = CompressionEnv(Budget(graph, EnvConfig(ratio=low, lbound=0.2, drop_blocks=True)), lambda keep: 0.5)
    for _ in range(20):
        info = _random_actions(tight, rng)
        assert info["macs"] <= tight.budget.limit and 0 in info["keep_counts"]


def test_an_action_under_half_the_lower_bound_drops_the_block_and_above_it_means_the_lower_bound(resnet20):
    graph = LayerGraph(resnet20, CIFAR)
    env = CompressionEnv(Budget(graph, EnvConfig(ratio=0.8, lbound=0.4, drop_blocks=True)), lambda keep: 0.5)
    env.reset()
    _, _, _, _, info = env.step([0.19])  # layer1.0's decision, 0.19 < 0.4 / 2
    assert info["keep"] == 0
    _, _, _, _, info = env.step([0.21])
    assert info["keep"] == env.budget.lower[1]


def test_the_knapsack_spends_each_stages_drops_on_the_blocks_that_cost_least_accuracy(resnet20):
    graph = LayerGraph(resnet20, CIFAR)
    budget = Budget(graph, EnvConfig(ratio=0.4, lbound=0.2, drop_blocks=True))
    # a made-up sensitivity table: dropping any block is nearly free, later blocks of a stage the most so
    table = []
    for i, allowed in enumerate(budget.allowed):
        picks = allowed[np.unique(np.linspace(0, len(allowed) - 1, 5).round().astype(int))]
        table.append([(int(c), 0.9 - (0.001 * (i + 1) if c == 0 else 0.05 * (1 - c / allowed[-1]))) for c in picks])
    keep = allocate(budget, table)
    assert budget.cost(keep) <= budget.limit
    for stage, cap in budget.drop_caps.items():
        members = [i for i, s in enumerate(budget.stage) if s == stage]
        chosen = [i for i in members if keep[i] == 0]
        assert len(chosen) == cap and chosen == members[:cap]  # the cheapest drops, no more than allowed


def test_a_policy_may_keep_0_channels_only_where_a_decision_is_a_block(resnet20):
    graph = LayerGraph(resnet20, CIFAR)
    keep = graph.full_keep()
    consumers, channels = [d.consumer for d in graph.decisions], [d.channels for d in graph.decisions]
    keep[graph.blocks[0].decision] = 0
    Policy("resnet20", consumers, channels, keep).check_matches(graph, "resnet20")
    keep[next(d.index for d in graph.decisions if d.block is None)] = 0
    with pytest.raises(AmcError, match="impossible number of channels"):
        Policy("resnet20", consumers, channels, keep).check_matches(graph, "resnet20")


def test_the_latency_model_learns_what_a_dropped_block_saves_from_one_network_without_blocks(resnet20,
                                                                                               simulated_timer):
    from conftest import simulated_ms
    from amc.config import SearchConfig
    from amc.latency.guard import calibrated_latency_model
    graph = LayerGraph(resnet20, CIFAR)
    config = SearchConfig(model="resnet20", target="latency", ratio=0.5, lbound=0.2, drop_blocks=True)
    latency = calibrated_latency_model(resnet20, graph, config.env_config, config)
    assert set(latency.block_ms) == {b.decision for b in graph.blocks} and "block_ms" in latency.info
    assert latency.info["calibration"][-1]["policy"] == "uniform 0.6, blocks dropped"
    # the simulated machine charges 2 us per conv and per norm, 1 ms per 10M MACs: a block costs its two norms
    # beyond its convs' table times, and the model predicts networks it was not fitted on, with blocks dropped
    # and without (0.6% off for these without the block term)
    assert latency.info["block_ms"] == pytest.approx(0.004, rel=1e-6)
    shrink = ChannelPruner(resnet20, graph, None, reconstruct=False)
    rng = np.random.default_rng(1)
    for drops in (True, False, True):
        keep = [int(rng.integers(max(1, c // 4), c + 1)) for c in graph.full_keep()]
        for block in graph.blocks[::3] if drops else []:
            keep[block.decision] = 0
        measured = simulated_ms(shrink.prune(keep)[0], CIFAR)
        assert latency.predict(keep) == pytest.approx(measured, rel=1e-4)


@pytest.fixture
def cifar_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, train_x=rng.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8), train_y=np.arange(400) % 10,
             test_x=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), test_y=np.arange(100) % 10)
    return path


def test_a_search_with_drop_blocks_exports_a_shallower_network_that_loads_and_runs_anywhere(tmp_path, cifar_npz):
    run = tmp_path / "run"
    from amc.data import load_dataset
    data = load_dataset("cifar10", cifar_npz, heldout_per_class=10)
    result = amc.search("resnet20", data, out=run, random_init=True, agent="random",
                        episodes=3, ratio=0.2, lbound=0.2, drop_blocks=True, calibration_images=100, seed=0)
    meta = json.loads((run / "model.json").read_text())
    assert meta["dropped_blocks"], "20% of the MACs at lbound 0.2 is out of reach without dropping blocks"
    loaded = amc.load_pruned(run)
    assert [n for n, m in loaded.named_modules() if isinstance(m, DroppedBlock)] == meta["dropped_blocks"]
    assert count_macs(loaded, CIFAR) == result.summary["macs"] and result.summary["macs_ratio"] <= 0.2
    x = torch.randn(2, *CIFAR)
    assert loaded(x).shape == (2, 10)
    # the original definition, narrowed and shortened in place, gives the same network
    torch.testing.assert_close(amc.load_pruned(run, model=models.create("resnet20"))(x), loaded(x))
    # `amc prune RUN` rebuilds the same shallower network from the run's policy and settings
    rebuilt = amc.apply_policy(run, data=data, out=tmp_path / "pruned", random_init=True)
    assert json.loads((tmp_path / "pruned" / "model.json").read_text())["dropped_blocks"] == meta["dropped_blocks"]
    assert rebuilt["macs"] == result.summary["macs"]
    # the command line in a fresh process: `amc bench` and a TorchScript file plain torch loads
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "amc.cli", "bench", str(run), "--repeats", "2", "--bench-warmup", "1",
                        "--min-seconds", "0", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["macs"] == result.summary["macs"]
    r = subprocess.run([sys.executable, "-m", "amc.cli", "export", str(run), "--torchscript", str(tmp_path / "m.pt")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(x), loaded(x))
    pytest.importorskip("onnxruntime")
    from amc.onnx_export import check_onnx, export_onnx
    export_onnx(loaded, tmp_path / "m.onnx", CIFAR)
    check_onnx(loaded, tmp_path / "m.onnx", x)


@pytest.mark.parametrize("agent", ["ddpg", "tpe"])
def test_the_learning_agents_search_with_drop_blocks_under_a_budget_only_drops_can_reach(tmp_path, cifar_npz, agent):
    pytest.importorskip("optuna") if agent == "tpe" else None
    from amc.data import load_dataset
    data = load_dataset("cifar10", cifar_npz, heldout_per_class=10)
    options = {"warmup": 2} if agent == "ddpg" else {"agent_options": {"startup_trials": 2}}
    result = amc.search("resnet20", data, out=tmp_path / "run", random_init=True, agent=agent, episodes=5, ratio=0.2,
                        lbound=0.2, drop_blocks=True, calibration_images=100, seed=0, **options)
    episodes = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 5 and all(0 in e["keep"] for e in episodes)
    assert result.summary["macs_ratio"] <= 0.2
