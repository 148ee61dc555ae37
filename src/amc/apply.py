"""Turning a policy into the exported run: build the pruned network, save it, and measure it.

`export_policy` writes model.pt/model.json (and model_sparse.pt for fine-grained) and returns the exported
network's figures; `apply_policy` (behind `amc prune`) does it for a saved policy.json, outside a search;
`rebuild_policy` prunes a run's policy again in memory with some settings changed (what `amc finetune` starts from).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from amc.config import SearchConfig
from amc.cost import count_macs, count_params
from amc.data import Dataset
from amc.errors import SaveError
from amc.evaluate import Evaluator
from amc.export import save_pruned
from amc.graph import LayerGraph
from amc.models import factory
from amc.pipeline import prepare, run_device, seed_and_threads
from amc.policy import Policy
from amc.pruning.fine_grained import WeightGraph, pack_sparse
from amc.run_inputs import check_weights, policy_run, run_config
from amc.runs import MODEL_FILE, POLICY_FILE, RUN_MARKER, RunDir, RunSummary
from amc.scoring import Scorer


def export_policy(run: RunDir, graph: LayerGraph | WeightGraph, scorer: Scorer, policy: Policy, dataset: Dataset,
                  info) -> tuple[nn.Module, dict]:
    """Build the pruned network of `policy`, write it into `run` and measure it: fp32 top-1 on the full held-out
    and test splits, counted MACs and parameters (and the sparse size for fine-grained)."""
    pruned = scorer.build(policy.keep)
    pruned.amc_info = info
    exported_macs = count_macs(pruned, info.input_shape)  # counted on the real network, not predicted
    save_pruned(pruned, run.path, extra={"policy": policy.to_dict()})
    # the reported figures are fp32 on the full splits, whatever precision or subset scored the search
    device = scorer.evaluator.device
    heldout = Evaluator(dataset.heldout, info.mean, info.std, device=device).top1(pruned)
    test = Evaluator(dataset.test, info.mean, info.std, device=device).accuracy(pruned, (1, 5))
    figures = {"heldout_top1": heldout, "test_top1": test[1], "test_top5": test.get(5),
               "macs": exported_macs, "macs_ratio": exported_macs / graph.total_macs,
               "params": count_params(pruned), "params_ratio": count_params(pruned) / graph.total_params}
    if isinstance(graph, WeightGraph):  # zeros are still stored densely: count and store them sparsely
        dense_bytes = run.size(MODEL_FILE)
        sparse_bytes = run.write_sparse(pack_sparse(pruned, [d.consumer for d in graph.decisions]))
        modules = dict(pruned.named_modules())
        zeros = sum(int((modules[d.consumer].weight == 0).sum()) for d in graph.decisions)  # incl. earlier stages'
        nonzero = graph.total_params - zeros
        figures.update(params=nonzero, params_ratio=nonzero / graph.total_params,
                       sparse_macs=graph.macs(policy.keep), dense_bytes=dense_bytes, sparse_bytes=sparse_bytes,
                       method="fine-grained")
    return pruned, figures


def apply_policy(policy: Policy | str, model: nn.Module | str | None = None, data: Dataset | str | None = None,
                 *, out, config: SearchConfig | None = None, overwrite: bool = False, random_init: bool = False,
                 trust_model_code: bool = False, **options) -> dict:
    """Prune a model by a saved policy and export it into `out` as a search exports its best policy: model.pt,
    model.json, policy.json, config.json and summary.json. Returns the summary.

    `policy` is a run directory (its policy.json), a run's policy.json, a policy file or a `Policy`. The
    settings default to the run's (model, weights, data, seed and the pruning settings: `selection`,
    `reconstruct`, `calibration_images`, `bn_recalibration`, `group_coupled`, `method`), so a run's own policy
    rebuilds the very network the search exported; `model`, `data`, `config` and keyword `options` replace
    them. A policy outside a run takes the search defaults and the policy's model. A policy made for another
    model, or for other prunable layers, is refused, and so is a randomly initialised network (no weights
    given or bundled) unless `random_init`. A model factory that the run or the policy names is code: it runs
    only if named here as `model` (or `config.model`) or with `trust_model_code=True`. Example::

        amc.apply_policy("runs/r56", out="pruned")     # the search's export, rebuilt
    """
    threads = torch.get_num_threads()
    run = RunDir(out)
    try:
        named = (model, options.get("model"), config.model if config is not None else None)
        with factory.trusting(trust_model_code, names=named):
            return _apply_policy(policy, model, data, out=run, config=config, overwrite=overwrite,
                                 random_init=random_init, **options)
    finally:
        run.unlock()
        torch.set_num_threads(threads)


def _apply_policy(policy, model, data, *, out: RunDir, config, overwrite, random_init, **options) -> dict:
    source_run = None if isinstance(policy, Policy) else policy_run(policy)
    if source_run is not None and Path(policy).is_dir():
        policy = source_run / POLICY_FILE
    source = None if isinstance(policy, Policy) else str(policy)
    out.check_new(overwrite, inputs=(source,), resumable=False)  # first: the run's settings are read only for a sound --out
    policy = policy if isinstance(policy, Policy) else Policy.load(policy)
    if config is None and source_run is not None:  # the run's own settings, what was given in their place
        given = {**options, **({"model": model} if isinstance(model, str) else {}),
                 **({"data": data} if isinstance(data, str) else {})}
        unchecked = (("data_dir",) if isinstance(data, Dataset) else ()) + (("weights",) if isinstance(model, nn.Module)
                                                                            else ())
        config = run_config(source_run, "pruned by its policy", unchecked=unchecked, **given)
    if model is None and config is None and "model" not in options:
        factory.check_named_in_file(policy.model, source)  # a factory the policy names is code that came with it
        model = policy.model
    config = resolve_config(model, data, config, options)
    device = run_device(config)  # a device this machine lacks is refused before anything loads
    if not isinstance(model, nn.Module):
        check_weights(config.model, config.weights, random_init, doing="prune")
    out.check_new(overwrite, inputs=(source, config.weights, config.data_dir), resumable=False)
    if overwrite and out.has(RUN_MARKER):
        out.lock()  # before any work: a run another process is writing is refused at once
    seed_and_threads(config)
    setup = prepare(config, model if isinstance(model, nn.Module) else None,
                    data if isinstance(data, Dataset) else None, device=device)
    policy.check_matches(setup.graph, config.model)
    baseline_top1 = setup.baseline_top1()

    out.create(overwrite, resumable=False)  # only now: a mistake found above leaves nothing behind
    try:
        out.write_config(config, dataset=setup.dataset, info=setup.info, graph=setup.graph, weights=setup.weights,
                         baseline_top1=baseline_top1, policy_source=source, device=str(setup.device))
        out.write_policy(policy)
        _, figures = export_policy(out, setup.graph, setup.scorer, policy, setup.dataset, setup.info)
        graph = setup.graph
        summary = RunSummary(model=config.model, policy_source=source, **figures, baseline={
            "heldout_top1": baseline_top1, "macs": graph.total_macs, "params": graph.total_params})
        out.write_summary(summary)
    except SaveError as e:
        out.remove()  # a pruned model without its summary is half an export
        raise SaveError(f"cannot save {e.path} ({e.reason}); removed the unfinished {out}: free disk space or "
                        "choose another --out, then run again", e.path, e.reason) from None
    return summary.to_dict()


def rebuild_policy(run: str | Path, original: nn.Module, dataset: Dataset, *, device: str | torch.device = "cpu",
                   purpose: str = "rebuilt", **options) -> nn.Module:
    """The run's own policy pruned again from `original` (the unpruned network with its weights) with the run's
    settings and `options` in their place (e.g. ``reconstruct=False``), on the CPU in eval mode; nothing is
    written. The run's seed picks the calibration images as it did for the export; the caller's random state and
    thread count are left as they were."""
    source = RunDir(run)
    policy = source.read_policy()
    config = run_config(source.path, purpose, unchecked=("data_dir", "weights"), **options)
    threads, numpy_state = torch.get_num_threads(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            np.random.seed(config.seed)
            setup = prepare(config, original, dataset, device=torch.device(device))
            policy.check_matches(setup.graph, config.model)
            pruned = setup.scorer.build(policy.keep)
    finally:
        torch.set_num_threads(threads)
        np.random.set_state(numpy_state)
    pruned.amc_info = setup.info
    return pruned.cpu().eval()


def resolve_config(model, data, config: SearchConfig | None, options: dict) -> SearchConfig:
    """One validated SearchConfig from a model/data given by name or object, `config` and keyword options."""
    from amc import models
    if isinstance(model, str):
        options["model"] = model
    elif isinstance(model, nn.Module):
        options["model"] = models.model_info(model).name
    if isinstance(data, str):
        options["data"] = data
    elif isinstance(data, Dataset):
        options["data"] = data.name
    return SearchConfig.resolve(config, **options)


__all__ = ["apply_policy", "export_policy", "rebuild_policy", "resolve_config"]
