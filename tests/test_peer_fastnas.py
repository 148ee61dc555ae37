"""peers.py's FastNAS methods: the registry and the install line without ModelOpt, and with it (the optional
extra) a real search on the digits CNN giving its three rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the benchmarks import each other by module name, as scripts do
    sys.path.insert(0, str(BENCHMARKS))

FASTNAS_ROWS = ("fastnas", "fastnas+bn", "fastnas-counts")


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--model", "digits_cnn", "--data", "digits", "--ratio", "0.5", "--latency-rounds", "0",
            "--out", str(tmp_path / "peers"), *extra]


def test_registry_lists_fastnas_and_nncf_with_its_reason():
    from peer_methods import METHODS, FastNAS, NotRun, names

    assert names(FastNAS) == FASTNAS_ROWS
    assert [METHODS[n].recalibrate for n in FASTNAS_ROWS] == [False, True, True]
    nncf = METHODS["nncf-filter"]
    assert isinstance(nncf, NotRun)
    assert "NNCF 3.4" in nncf.reason and "--method fine-grained" in nncf.reason and "unstructured" in nncf.short_reason


def test_fastnas_without_modelopt_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import peers

    monkeypatch.setitem(sys.modules, "modelopt", None)  # as if not installed, whether it is or not
    with pytest.raises(SystemExit):
        peers.parse_args(_args(tmp_path, "--methods", "fastnas", "uniform"))
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "pip install nvidia-modelopt torchprofile==0.0.4" in error
    # asked for nothing in particular: every other method, and a note on why the fastnas ones are left out
    args = peers.parse_args(_args(tmp_path))
    assert not set(args.methods) & set(FASTNAS_ROWS) and "nncf-filter" in args.methods
    assert "pip install nvidia-modelopt" in capsys.readouterr().out


@pytest.mark.slow
def test_fastnas_rows_on_the_digits_cnn(tmp_path):
    pytest.importorskip("modelopt.torch.prune", reason="NVIDIA ModelOpt is the optional extra `fastnas`")
    import peers
    import torch

    import amc

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as peers.py's main sets it (--threads): 4x faster here than two threads
    try:
        rows = {r["method"]: r for r in peers.run(peers.parse_args(_args(tmp_path, "--methods", *FASTNAS_ROWS)))}
    finally:
        torch.set_num_threads(threads)
    assert set(rows) == set(FASTNAS_ROWS)
    for row in rows.values():
        assert row["macs_ratio"] <= 0.5 + 1e-9 and row["search_seconds"] > 0 and 0 <= row["heldout_top1"] <= 1
    raw, counts = rows["fastnas"], rows["fastnas-counts"]
    assert raw["keep"] == counts["keep"] and raw["macs"] == counts["macs"]  # its widths, rebuilt through ours
    assert min(counts["ratios"]) < 1  # it did prune
    assert (tmp_path / "peers" / "fastnas" / "seed0" / "fastnas_search.pth").exists()  # what a killed run resumes
    rebuilt = amc.load_pruned(counts["run_dir"])
    widths = [m.out_channels for m in rebuilt.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[:len(counts["keep"])] == counts["keep"]
