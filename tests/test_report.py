"""`amc report`: figures and a self-contained HTML page from a real (tiny) search run."""

import base64
import json
import re
import shutil
import struct
import subprocess
import sys

import pytest

import amc
from amc.data import load_dataset
from amc.errors import AmcError
from amc.report import LAYERS_FIGURE, SEARCH_FIGURE, load_run, warmup_episodes, write_report
from amc.search import SearchConfig

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ddpg_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("report") / "ddpg"
    amc.search(config=SearchConfig(agent="ddpg", episodes=8, warmup=3, calibration_images=300, seed=0),
               out=out, data=digits)
    return out


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / run.name)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_has_valid_figures_and_a_self_contained_page(ddpg_run, tmp_path):
    run = _copy(ddpg_run, tmp_path)
    page = write_report(run)
    assert page == run / "report.html"
    html = page.read_text()
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(embedded) == 2
    for name in (LAYERS_FIGURE, SEARCH_FIGURE):
        png = (run / name).read_bytes()
        width, height = _png_size(png)
        assert len(png) > 10_000 and width > 500 and height > 300
        assert base64.b64encode(png).decode() in embedded  # the page shows exactly the written figure
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:)", html) and "http" not in html  # nothing external

    config = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    for decision in config["decisions"]:
        assert f"<code>{decision['consumer']}</code>" in html
    assert f"{100 * summary['heldout_top1']:.2f}%" in html
    assert f"{100 * summary['test_top1']:.2f}%" in html
    assert f"{100 * summary['baseline']['heldout_top1']:.2f}%" in html
    assert "not measured" in html  # no latency in this run


def test_per_layer_macs_after_pruning_add_up_to_the_exported_model(ddpg_run):
    from amc.report import layer_rows
    run = load_run(ddpg_run)
    rows = layer_rows(run)
    summary = run.summary
    # digits_cnn is a chain: every conv but the first and last lies between two decisions
    assert [r.kept for r in rows] == json.loads((ddpg_run / "policy.json").read_text())["keep"]
    assert all(r.macs_after is not None and r.macs_after <= r.macs_before for r in rows)
    assert any(r.macs_after < r.macs_before for r in rows) and summary.macs_ratio <= 0.5 + 1e-9


def test_warmup_comes_from_the_log_else_from_the_config(ddpg_run, tmp_path):
    assert warmup_episodes(load_run(ddpg_run)) == 3  # the first episode with agent losses
    run = _copy(ddpg_run, tmp_path)
    records = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    for r in records:
        r["agent"] = {}
    (run / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = json.loads((run / "config.json").read_text())
    config["search"]["warmup"] = None  # the search's default: min(100, episodes // 4) = 2
    (run / "config.json").write_text(json.dumps(config))
    assert warmup_episodes(load_run(run)) == 2


def test_finetune_and_latency_are_shown(ddpg_run, tmp_path):
    run = _copy(ddpg_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["finetune"] = {"epochs": 7, "lr": 0.01, "optimizer": "sgd", "heldout_top1": 0.9123,
                           "test_top1": 0.9345, "distill": False}
    (run / "summary.json").write_text(json.dumps(summary))
    html = write_report(run, latency=True).read_text()
    latency = json.loads((run / "latency.json").read_text())
    assert latency["original_ms"] > 0 and latency["pruned_ms"] > 0
    assert f"{latency['pruned_ms']:.3f} ms" in html and "not measured" not in html
    assert "93.45%" in html and "91.23%" in html and "7 epochs" in html


def test_one_episode_uniform_run(tmp_path, digits):
    out = tmp_path / "uniform"
    amc.search(config=SearchConfig(agent="uniform", calibration_images=300), out=out, data=digits)
    write_report(out)
    assert _png_size((out / SEARCH_FIGURE).read_bytes())[0] > 500


def test_missing_matplotlib_is_a_one_line_install_hint(ddpg_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(AmcError, match=r"pip install 'amc-compress\[report\]'"):
        write_report(ddpg_run)


def test_not_a_run_is_refused(tmp_path, ddpg_run):
    with pytest.raises(AmcError, match="not found"):
        write_report(tmp_path / "nothing")
    unfinished = _copy(ddpg_run, tmp_path)
    (unfinished / "summary.json").unlink()
    with pytest.raises(AmcError, match="cannot report on .*: it is export interrupted: resume with `amc search "
                                       "--resume --out "):
        write_report(unfinished)
    (unfinished / "model.pt").write_bytes(b"another export's")
    _copy_summary = json.loads((ddpg_run / "summary.json").read_text())
    (unfinished / "summary.json").write_text(json.dumps(_copy_summary))
    with pytest.raises(AmcError, match="it is export interrupted"):  # model.pt is not the one summary.json names
        write_report(unfinished)


def test_cli(ddpg_run, tmp_path, monkeypatch, capsys):
    run = _copy(ddpg_run, tmp_path)
    r = subprocess.run([sys.executable, "-m", "amc.cli", "report", str(run), "--json"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["report"] == str(run / "report.html") and (run / "report.html").exists()

    from amc.cli import main  # in-process for the error: a second interpreter start costs seconds
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sys, "argv", ["amc", "report", str(tmp_path / "empty")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a search run" in errors[0] and "Traceback" not in stderr


def test_the_report_compares_the_search_with_the_fixed_policies_at_its_budget(ddpg_run, tmp_path):
    from amc.baselines import BASELINE_NAMES, verdict
    run = _copy(ddpg_run, tmp_path)
    html = write_report(run).read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert "Was the search worth it?" in html and html.count(verdict(summary).replace("'", "&#x27;")) == 2
    for name, baseline in summary["baselines"].items():
        assert BASELINE_NAMES[name] in html
        assert f"{100 * baseline['test_top1']:.2f}%" in html and f"{100 * baseline['heldout_top1']:.2f}%" in html
    del summary["baselines"]  # a run made before baselines were scored
    (run / "summary.json").write_text(json.dumps(summary))
    assert "Not recorded: the run was made before amc scored baselines" in write_report(run).read_text()


def test_raced_episodes_are_told_apart_from_fully_scored_ones(ddpg_run):
    from amc.report.run import fully_scored
    run = load_run(ddpg_run)
    full = max(r["scored_images"] for r in run.episodes)
    kinds = fully_scored(run)
    assert kinds == [r["scored_images"] == full for r in run.episodes]
    assert any(kinds) and not all(kinds)  # this run raced some candidates out
    # a repeated policy (0 images: its score was reused) is of the kind of its first score
    first_raced = run.episodes[kinds.index(False)]
    run.episodes.append({**first_raced, "episode": len(run.episodes), "scored_images": 0})
    run.episodes.append({**run.episodes[0], "episode": len(run.episodes), "scored_images": 0})
    assert fully_scored(run)[-2:] == [False, True]


def test_the_reproduce_command_repeats_the_runs_settings(ddpg_run, tmp_path, monkeypatch):
    import importlib
    import shlex

    from amc.cli import main
    from amc.report.run import reproduce_command
    run_dir = _copy(ddpg_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["search"].update(agent_options={"anchor": "uniform", "noise_sigma_min": 0.1}, reconstruct=False,
                            racing=False, data_dir=str(tmp_path / "a dir" / "x.npz"), ratio=0.3, points_per_image=5)
    (run_dir / "config.json").write_text(json.dumps(config))
    command, api_only = reproduce_command(load_run(run_dir))
    assert command.startswith("amc search ") and "--no-reconstruct" in command and "--no-racing" in command
    assert api_only == ["points_per_image=5"] and "--selection" not in command  # defaults are left out ...
    assert "--model digits_cnn" in command and "--seed 0" in command  # ... but the budget, searcher and seed stay
    assert f"<code>{command.replace(chr(39), '&#x27;')}</code>" in write_report(run_dir).read_text()

    seen = {}

    def fake_search(*, config, **_):
        seen.update(config.to_dict())
        raise SystemExit(0)

    monkeypatch.setattr(importlib.import_module("amc.search"), "search", fake_search)  # the module, not amc.search()
    monkeypatch.setattr(sys, "argv", shlex.split(command))
    with pytest.raises(SystemExit):
        main()
    assert seen == {**config["search"], "points_per_image": SearchConfig().points_per_image}


def test_latency_is_timed_on_the_backend_the_run_targets_with_the_speedup(ddpg_run, tmp_path, simulated_timer):
    run = _copy(ddpg_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["search"].update(latency_backend="onnxruntime", latency_threads=2)
    (run / "config.json").write_text(json.dumps(config))
    html = write_report(run, latency=True).read_text()
    latency = json.loads((run / "latency.json").read_text())
    assert latency["backend"] == "onnxruntime" and latency["threads"] == 2
    assert "onnxruntime, 2 thread(s)" in html
    assert f"{latency['original_ms'] / latency['pruned_ms']:.2f}&times; faster" in html


def test_a_summary_from_an_earlier_amc_is_shown_reported_and_kept(ddpg_run, tmp_path):
    """Earlier versions wrote a search's held-out top-1 as `best_val_top1` (a prune's as `heldout_top1`): such a run
    loads, shows, lists and reports the same figure, and a fine-tune rewrites its summary in today's names."""
    from amc.run_index import describe_run, list_runs
    from amc.runs import RunDir

    run = _copy(ddpg_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    heldout = summary.pop("heldout_top1")
    (run / "summary.json").write_text(json.dumps({"best_val_top1": heldout, **summary}))
    assert load_run(run).summary.heldout_top1 == heldout
    shown = describe_run(run)
    assert shown["status"] == "finished" and shown["best"]["heldout_top1"] == heldout
    assert next(r for r in list_runs(tmp_path) if r["run"] == run.name)["best_heldout_top1"] == heldout
    assert f"{100 * heldout:.2f}%" in write_report(run).read_text()

    RunDir(run).record_finetune({"epochs": 1, "heldout_top1": 0.5, "test_top1": 0.5})
    rewritten = json.loads((run / "summary.json").read_text())
    assert rewritten["heldout_top1"] == heldout and "best_val_top1" not in rewritten
    assert rewritten["export"] == summary["export"] and describe_run(run)["status"] == "finished"
