"""Every bad input `amc` must refuse cleanly, in one list shared by the test and the doc.

tests/test_bad_inputs.py runs each case and checks the contract (exit code 2, one `error:` line naming
the problem and the fix, no traceback, nothing half-written); scripts/make_errors_doc.py runs the same
cases and writes the real messages into docs/errors.md, which the test compares with what runs now.

A case runs `amc ARGS` in a scratch directory prepared by `setup` (so paths in messages are the short relative
ones a user typed): through the CLI's `main()` in the test's own process, or as `python -m amc.cli` where the
case needs a fresh interpreter (its own environment variables); for what the CLI cannot express (a user's own
nn.Module), a Python API call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from amc.runs import LOCK_FILE, RUN_MARKER

CLI = [sys.executable, "-m", "amc.cli"]
PAYLOAD_MARKER = "payload-ran"   # the pickled payload creates this file if it is ever unpickled
HOOK_DIR = ".hook"               # sitecustomize simulating a full disk, only where a case asks for it

# Imported at interpreter start-up by the subprocess of a disk-full case (PYTHONPATH=.hook): the
# atomic writer's fsync of the named file fails with ENOSPC from its n-th save on (the disk stays full).
ENOSPC_HOOK = '''
import errno, os

_name, _, _nth = os.environ["AMC_TEST_ENOSPC"].partition(":")
_saves = [0]
_fsync = os.fsync


def _full_disk_fsync(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{_name}."):
        _saves[0] += 1
        if _saves[0] >= int(_nth or 1):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _fsync(fd)


os.fsync = _full_disk_fsync
'''


@dataclass
class Case:
    name: str                               # what is wrong, as docs/errors.md lists it
    expect: tuple[str, ...]                 # words the message must contain
    args: list[str] = field(default_factory=list)   # CLI arguments, run in the scratch directory
    setup: Callable[[Path], None] | None = None     # writes the case's input files into the scratch directory
    api: Callable[[Path], None] | None = None       # a Python API call instead of the CLI
    api_doc: str = ""                       # how the API case reads in the doc
    env: dict = field(default_factory=dict)
    leaves: str = "nothing"                 # "nothing": scratch directory unchanged; "state": resumable run
    fresh_process: bool = False             # run as `python -m amc.cli` even without environment variables

    @property
    def in_fresh_process(self) -> bool:
        return self.fresh_process or bool(self.env)

    @property
    def command(self) -> str:
        return self.api_doc if self.api else "amc " + " ".join(self.args)


@dataclass
class Outcome:
    returncode: int
    stderr: str
    message: str          # the error line without "error: " (or the AmcError text of an API case)


def run_case(case: Case, scratch: Path, extra_args: tuple[str, ...] = ()) -> Outcome:
    """Run `case` in `scratch` (prepared with `prepare` first): in this process where nothing outside amc's own
    code is at stake, in a fresh interpreter where the case sets environment variables (the full-disk hook, HOME)
    or asks for one (`Case.fresh_process`). In-process cases must run in the main thread, one at a time."""
    if case.api:
        from amc.errors import AmcError
        try:
            case.api(scratch)
        except AmcError as e:
            return Outcome(2, f"error: {e}", str(e))
        return Outcome(0, "", "")
    if not case.in_fresh_process:
        code, stderr = _in_process([*extra_args, *case.args], scratch)
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **case.env}
        if case.env.get("AMC_TEST_ENOSPC"):
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scratch / HOOK_DIR), env.get("PYTHONPATH")]))
        r = subprocess.run([*CLI, *extra_args, *case.args], cwd=scratch, capture_output=True, text=True, env=env,
                           timeout=600, stdin=subprocess.DEVNULL)
        code, stderr = r.returncode, r.stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    message = errors[0].removeprefix("error:").strip() if len(errors) == 1 else ""
    return Outcome(code, stderr, message)


class _TimedOut(BaseException):
    pass


def _in_process(args: list[str], cwd: Path, timeout_s: int = 300) -> tuple[int, str]:
    """`amc ARGS` run by the CLI's own `main()` in this process, from `cwd`: (exit code, stderr). What `main()`
    changes for the process (working directory, warning format, torch threads, signal handlers) is put back; a
    command that does not return within `timeout_s` (a hang) ends as exit 124 with a line saying so."""
    import contextlib
    import io
    import signal
    import traceback
    import warnings
    from unittest import mock

    import torch

    from amc.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved = (os.getcwd(), torch.get_num_threads(), warnings.formatwarning, signal.getsignal(signal.SIGTERM))

    def timed_out(*_):
        raise _TimedOut

    previous_alarm = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(timeout_s)
    os.chdir(cwd)
    code = 0
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                mock.patch.object(sys, "argv", ["amc", *args]):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            except _TimedOut:
                code = 124
                print(f"hung: no answer within {timeout_s} s", file=stderr)
            except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
                traceback.print_exc(file=stderr)
                code = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous_alarm)
        os.chdir(saved[0])
        torch.set_num_threads(saved[1])
        warnings.formatwarning = saved[2]
        signal.signal(signal.SIGTERM, saved[3])
    return code, stderr.getvalue()


def prepare(case: Case, scratch: Path) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(scratch)
    if case.env.get("AMC_TEST_ENOSPC"):
        (scratch / HOOK_DIR).mkdir(exist_ok=True)
        (scratch / HOOK_DIR / "sitecustomize.py").write_text(ENOSPC_HOOK)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `root`, bytecode caches aside: equal snapshots = nothing written. A
    run's lock file is left out: a command that resumes a run takes its lock (writing its pid there) first."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if "__pycache__" not in p.parts and p.name != LOCK_FILE}


# ---- inputs -----------------------------------------------------------------------------------------------

def _cifar_arrays(**changes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), "train_y": np.arange(60) % 10,
              "test_x": rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), "test_y": np.arange(20) % 10}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def _npz(name: str, **changes) -> Callable[[Path], None]:
    return lambda tmp: np.savez(tmp / name, **_cifar_arrays(**changes))


def _digits_state():
    from amc import models
    return models.create("digits_cnn").state_dict()


class Payload:
    """Unpickling this runs open(PAYLOAD_MARKER, "w"): proof, if the file appears, that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _write_checkpoint(kind: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        import torch

        from amc import models
        if kind == "random":
            (tmp / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
        elif kind == "truncated":
            torch.save(_digits_state(), tmp / "truncated.pt")
            (tmp / "truncated.pt").write_bytes((tmp / "truncated.pt").read_bytes()[:1000])
        elif kind == "other":
            torch.save(models.create("resnet20").state_dict(), tmp / "resnet20.pt")
        elif kind == "payload":
            torch.save({**_digits_state(), "extra": Payload(tmp / PAYLOAD_MARKER)}, tmp / "payload.pt")
        elif kind == "directory":
            (tmp / "weights_dir").mkdir()
    return setup


def _policy(name: str, **fields) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        if fields.get("text") is not None:
            (tmp / name).write_text(fields["text"])
            return
        (tmp / name).write_text(json.dumps({
            "model": "digits_cnn", "consumers": ["features.1.0", "features.3.0", "features.4.0", "classifier"],
            "channels": [32, 64, 64, 128], "keep": [16, 32, 32, 64], **fields}))
    return setup


def _imagefolder_one_image_per_class(tmp: Path) -> None:
    from PIL import Image
    for split, classes in (("train", "ab"), ("val", "a")):
        for c in classes:
            (tmp / "tiny" / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (40, 80, 120)).save(tmp / "tiny" / split / c / "0.png")


def _imagefolder_one_class(tmp: Path) -> None:
    from PIL import Image
    for split, images in (("train", 3), ("val", 1)):
        (tmp / "one" / split / "a").mkdir(parents=True)
        for i in range(images):
            Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(tmp / "one" / split / "a" / f"{i}.png")


def _existing_run(tmp: Path) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / "notes.txt").write_text("an earlier result")




def _amc_run(tmp: Path, name: str = "run", **files: str) -> Path:
    """A run directory as amc leaves one: its marker, its lock file, then `files` (name -> text)."""
    run = tmp / name
    run.mkdir()
    (run / RUN_MARKER).write_text('{"amc_run": 1}')
    (run / LOCK_FILE).write_text("1\n")
    for file, text in files.items():
        (run / file).write_text(text)
    return run


def _stopped_run(settings: dict | None = None, state=None, **files: str) -> Callable[[Path], None]:
    """A digits run stopped after its first episode: config.json with `settings`, a state.pt (`state`: what
    torch.save writes there; default: bytes that are never read), and `files`."""
    def setup(tmp: Path) -> None:
        import torch
        run = _amc_run(tmp, **{"config.json": json.dumps({"search": {"agent": "ddpg", "episodes": 3, "warmup": 1,
                                                                    "calibration_images": 50, **(settings or {})}}),
                               "episodes.jsonl": "{}\n", **files})
        if state is None:
            (run / "state.pt").write_bytes(b"state")
        else:
            torch.save(state, run / "state.pt")
    return setup


def _corrupt_run(tmp: Path) -> None:
    _amc_run(tmp, **{"config.json": '{"search": {"model": "digits_cnn", ', "state.pt": "state"})


def _run_with_other_files(tmp: Path) -> None:
    _amc_run(tmp, **{"config.json": "{}", "notes.txt": "my notes"})


def _run_and_a_link(tmp: Path) -> None:
    _amc_run(tmp, **{"config.json": "{}"})
    (tmp / "link").symlink_to("run", target_is_directory=True)


def _run_holding_its_policy(tmp: Path) -> None:
    _amc_run(tmp)
    _policy("run/policy.json")(tmp)


def _checkpoint_with(value: float, name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        import torch
        state = _digits_state()
        state["features.1.0.weight"][0, 0, 0, 0] = value
        torch.save(state, tmp / name)
    return setup


def _search_non_finite_model(tmp: Path) -> None:
    import torch

    import amc
    from amc import models
    net = models.create("digits_cnn")
    with torch.no_grad():
        net.classifier.weight[0, 0] = float("nan")
    amc.search(net, "digits", out=tmp / "run", episodes=2)


def _a_file(tmp: Path) -> None:
    (tmp / "notes.txt").write_text("a file, not a folder")


def _fifo(name: str) -> Callable[[Path], None]:
    """A named pipe where a file belongs: opening it to read would wait forever for a writer."""
    return lambda tmp: os.mkfifo(tmp / name)


def _module(name: str, text: str) -> Callable[[Path], None]:
    """A user's Python module in the scratch directory, for `--model NAME:function`."""
    return lambda tmp: (tmp / f"{name}.py").write_text(text)


# ---- run directories as someone else may hand them over ----------------------------------------------------

def _exported_run(model: str = "digits_cnn", search_run: bool = False, summary: bool = False,
                  **kwargs) -> Callable[[Path], None]:
    """A run holding an export of digits_cnn whose model.json names `model` (called with `kwargs`); with
    `search_run`, config.json is a search's (one episode of one planned, so only the export is missing)."""
    def setup(tmp: Path) -> None:
        import torch

        from amc import models
        config = {"search": {"model": "digits_cnn", "data": "digits", "episodes": 1, "agent": "uniform"}}
        run = _amc_run(tmp, **{"config.json": json.dumps({**config, **({"baseline": {}} if search_run else {})}),
                               "episodes.jsonl": '{"reward": 0.5, "accuracy": 0.5, "keep": [16, 32, 32, 64]}\n'})
        torch.save(models.create("digits_cnn").state_dict(), run / "model.pt")
        info = {"name": model, "input_shape": [1, 8, 8], "mean": [0.5], "std": [0.5], "num_classes": 10,
                "kwargs": kwargs}
        (run / "model.json").write_text(json.dumps({"info": info}))
    return setup


def _lock_replaced(make: str, setup: Callable[[Path], None]) -> Callable[[Path], None]:
    """`setup`'s run with its .amc-lock replaced by a link to a file outside the run, or by a FIFO."""
    def replaced(tmp: Path) -> None:
        setup(tmp)
        lock = tmp / "run" / LOCK_FILE
        lock.unlink()
        if make == "link":
            (tmp / "precious.txt").write_text("the user's own file")
            lock.symlink_to(tmp / "precious.txt")
        else:
            os.mkfifo(lock)
    return replaced


def _run_with_user_files(*names: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        run = _amc_run(tmp, **{"config.json": "{}"})
        for name in names:
            (run / name).parent.mkdir(exist_ok=True)
            (run / name).write_text("the user's")
    return setup


def _settings_file(name: str, text: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_text(text)


def _searched_then_weights_gone(tmp: Path) -> None:
    """A real search from a weights file of the user's, which is then deleted (recorded as an older run records
    it, relative to where the search ran, so that the message reads the same wherever the case runs)."""
    import shutil

    import amc
    from amc.models import bundled_weights
    shutil.copy(bundled_weights("digits_cnn"), tmp / "weights.pt")
    amc.search(config=amc.SearchConfig(agent="uniform", ratio=0.5, weights=str(tmp / "weights.pt"),
                                       calibration_images=100), out=tmp / "run")
    (tmp / "weights.pt").unlink()
    config = json.loads((tmp / "run" / "config.json").read_text())
    config["search"]["weights"] = "weights.pt"
    (tmp / "run" / "config.json").write_text(json.dumps(config))


def _interrupted_prune(tmp: Path) -> None:
    _amc_run(tmp, name="source")
    _amc_run(tmp, name="pruned", **{"config.json": json.dumps({"search": {}, "policy_source": "source/policy.json",
                                                               "baseline": {}}), "model.pt": "x"})

# ---- models the CLI cannot name (Python API) --------------------------------------------------------------

def _tagged(net, name: str):
    from amc.models import ModelInfo
    net.amc_info = ModelInfo(name, (1, 8, 8), (0.5,), (0.5,), 10)
    return net


def _search_unsupported_layers(tmp: Path) -> None:
    from torch import nn

    import amc
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    amc.search(_tagged(net, "upsampler"), "digits", out=tmp / "run", episodes=2)


def _search_no_prunable_layers(tmp: Path) -> None:
    from torch import nn

    import amc
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    amc.search(_tagged(net, "one_conv"), "digits", out=tmp / "run", episodes=2)


# ---- the cases --------------------------------------------------------------------------------------------

_CIFAR = ["search", "--model", "resnet20", "--random-init", "--data", "cifar10", "--out", "run", "--data-dir"]

GROUPS: dict[str, list[Case]] = {"Missing or unreadable paths": [
    Case("checkpoint path that does not exist", ("checkpoint not found", "missing.pt", "check the path"),
         ["search", "--weights", "missing.pt", "--out", "run"]),
    Case("checkpoint path that cannot be read (a directory)", ("cannot read checkpoint", "weights_dir"),
         ["search", "--weights", "weights_dir", "--out", "run"], _write_checkpoint("directory")),
    Case("data path that does not exist", ("missing.npz", "does not exist"), [*_CIFAR, "missing.npz"]),
    Case("policy path that does not exist", ("policy file not found", "missing.json"),
         ["prune", "--policy", "missing.json", "--out", "pruned"]),
    Case("a run's data recorded relative to where the search ran, not found here (`amc eval`)",
         ("the run's data cifar10.npz is not found", "relative to where the search ran", "pass --data-dir FILE"),
         ["eval", "run"], lambda tmp: _amc_run(tmp, **{"config.json": json.dumps(
             {"search": {"model": "resnet20", "data": "cifar10", "data_dir": "cifar10.npz"}})})),
    Case("settings file with an unknown key (`amc search --config`)",
         ("unknown setting 'sigma' in search.toml", "valid settings:", "agent_options", "keep_ratio"),
         ["search", "--config", "search.toml", "--out", "run"],
         lambda tmp: (tmp / "search.toml").write_text("sigma = 0.3\n")),
    Case("the original weights not found any more (`amc finetune`)",
         ("the original weights weights.pt are not found", "--teacher-weights FILE", "--start exported"),
         ["finetune", "run", "--epochs", "1"], _searched_then_weights_gone),
], "Data": [
    Case("unknown dataset name", ("unknown dataset", "imagenet21k", "cifar10"),
         ["search", "--data", "imagenet21k", "--out", "run"]),
    Case("data file with missing keys", ("missing keys", "train_y, test_y"), [*_CIFAR, "no_labels.npz"],
         _npz("no_labels.npz", train_y=None, test_y=None)),
    Case("data file with the wrong dtype", ("train_x must be uint8", "float32"), [*_CIFAR, "floats.npz"],
         _npz("floats.npz", train_x=np.zeros((60, 32, 32, 3), np.float32))),
    Case("data file with the wrong shape", ("test_x must be [N, H, W, C]", "[20, 3072]"), [*_CIFAR, "flat.npz"],
         _npz("flat.npz", test_x=np.zeros((20, 3072), np.uint8))),
    Case("data file with labels out of range", ("labels 1..10", "outside 0..9"), [*_CIFAR, "labels.npz"],
         _npz("labels.npz", train_y=np.arange(60) % 10 + 1)),
    Case("empty dataset", ("train split is empty",), [*_CIFAR, "empty.npz"],
         _npz("empty.npz", train_x=np.zeros((0, 32, 32, 3), np.uint8), train_y=np.zeros(0, np.int64))),
    Case("empty held-out split (one training image per class)", ("held-out split", "empty"),
         ["search", "--data", "imagefolder", "--data-dir", "tiny", "--out", "run"], _imagefolder_one_image_per_class),
    Case("dataset with a single class (nothing can be ranked)", ("holds a single class", "at least two classes"),
         ["search", "--data", "imagefolder", "--data-dir", "one", "--out", "run"], _imagefolder_one_class),
], "Models and checkpoints": [
    Case("unknown model name", ("unknown model 'resnet5'", "did you mean", "resnet56"),
         ["search", "--model", "resnet5", "--out", "run"]),
    Case("checkpoint of another model", ("does not match model digits_cnn", "missing keys [features.0.0.weight",
                                         "unexpected keys", "check --model"),
         ["search", "--weights", "resnet20.pt", "--out", "run"], _write_checkpoint("other")),
    Case("corrupt checkpoint", ("cannot read checkpoint random.pt", "torch.save"),
         ["search", "--weights", "random.pt", "--out", "run"], _write_checkpoint("random")),
    Case("truncated checkpoint", ("cannot read checkpoint truncated.pt", "torch.save"),
         ["search", "--weights", "truncated.pt", "--out", "run"], _write_checkpoint("truncated")),
    Case("checkpoint with a NaN weight", ("checkpoint nan.pt holds non-finite values", "features.1.0.weight",
                                          "before training diverged"),
         ["search", "--weights", "nan.pt", "--out", "run"], _checkpoint_with(float("nan"), "nan.pt")),
    Case("checkpoint with an infinite weight", ("checkpoint inf.pt holds non-finite values",),
         ["eval", "--model", "digits_cnn", "--weights", "inf.pt", "--data", "digits"],
         _checkpoint_with(float("inf"), "inf.pt")),
    Case("model with a NaN weight (Python API: a user's nn.Module)", ("non-finite values", "classifier.weight"),
         api=_search_non_finite_model, api_doc="amc.search(<digits_cnn with one NaN weight>, 'digits', out='run')"),
    Case("checkpoint carrying a pickled payload (never run)",
         ("payload.pt", "code/objects other than tensors", "refused"),
         ["search", "--weights", "payload.pt", "--out", "run"], _write_checkpoint("payload")),
    Case("model without weights, given or bundled", ("no weights for resnet20", "randomly initialised",
                                                    "--weights FILE", "--random-init"),
         ["search", "--model", "resnet20", "--data", "cifar10", "--out", "run"]),
    Case("input size that does not fit the model", ("expects inputs (3, 32, 32)", "(1, 8, 8)", "--model or --data"),
         ["search", "--model", "resnet20", "--random-init", "--data", "digits", "--out", "run"]),
    Case("model with unsupported layer types (Python API: a user's nn.Module)",
         ("cannot prune consistently", "2 (ConvTranspose2d)"), api=_search_unsupported_layers,
         api_doc="amc.search(<Sequential with a ConvTranspose2d at index 2>, 'digits', out='run')"),
    Case("model with no prunable layers (Python API: a user's nn.Module)",
         ("no prunable layers", "flattened feature map"), api=_search_no_prunable_layers,
         api_doc="amc.search(<Sequential(Conv2d(1, 8), ReLU, Flatten, Linear)>, 'digits', out='run')"),
], "Budget and training settings": [
    Case("ratio of 0", ("--ratio must be in (0, 1]", "got 0"), ["search", "--ratio", "0", "--out", "run"]),
    Case("ratio above 1", ("--ratio must be in (0, 1]", "got 1.5"), ["search", "--ratio", "1.5", "--out", "run"]),
    Case("training warm-up longer than the training (`amc train`)", ("--warmup-epochs", "between 0 and epochs (1)", "got 2"),
         ["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--warmup-epochs", "2",
          "--out", "ck.pt"]),
    Case("negative seed", ("--seed must be at least 0", "got -1"), ["search", "--seed", "-1", "--out", "run"]),
    Case("negative thread count", ("--threads must be at least 1", "got -1"),
         ["search", "--threads", "-1", "--out", "run"]),
    Case("unknown device", ("unknown device 'gpu7'", "pass --device"), ["search", "--device", "gpu7", "--out", "run"]),
    Case("device this machine does not have", ("device 'cuda' is not available", "pass --device cpu"),
         ["search", "--device", "cuda", "--out", "run"], env={"CUDA_VISIBLE_DEVICES": ""}),
    Case("device this machine does not have (`amc train`)", ("device 'cuda' is not available", "pass --device cpu"),
         ["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--out", "m.pt", "--device", "cuda"],
         env={"CUDA_VISIBLE_DEVICES": ""}),
    Case("agent option of the wrong type", ("bad --agent-option for ddpg", "batch_size must be an integer", "2.5"),
         ["search", "--agent", "ddpg", "--agent-option", "batch_size=2.5", "--out", "run"]),
    Case("learning rate that is not a number (`amc train`)", ("--lr must be a finite number", "nan"),
         ["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--lr", "nan", "--out", "ck.pt"]),
    Case("negative learning rate (`amc finetune`)", ("--lr must be above 0", "-0.1"),
         ["finetune", "run", "--lr", "-0.1"], _stopped_run()),
    Case("training that diverges (`amc train --lr 1e12`)", ("training diverged in epoch 1", "nothing was saved",
                                                            "lower --lr"),
         ["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "2", "--lr", "1e12", "--out", "ck.pt"]),
    Case("batch size 0 (`amc train`)", ("--batch-size must be at least 1", "got 0"),
         ["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--batch-size", "0", "--out",
          "ck.pt"]),
    Case("racing with an accuracy-guaranteed reward", ("--racing", "--reward acc", "drop --racing"),
         ["search", "--racing", "--reward", "acc-macs", "--out", "run"]),
    Case("budget below what the lower bound reaches", ("cannot be met", "keeps 0.", "use --ratio >="),
         ["search", "--ratio", "0.001", "--out", "run"]),
    Case("--drop-blocks on a network without residual blocks", ("--drop-blocks", "no residual block",
                                                                "without --drop-blocks"),
         ["search", "--drop-blocks", "--out", "run"]),
    Case("--drop-share out of range", ("--drop-share must be in (0, 1)", "got 1.5"),
         ["search", "--drop-blocks", "--drop-share", "1.5", "--out", "run"]),
], "Policies (`amc prune`)": [
    Case("corrupt policy JSON", ("policy file broken.json is corrupt", "JSONDecodeError", "amc search"),
         ["prune", "--policy", "broken.json", "--out", "pruned"], _policy("broken.json", text='{"model": "digi')),
    Case("policy of another model", ("made for model 'resnet20', not 'digits_cnn'", "--model resnet20"),
         ["prune", "--policy", "r20.json", "--model", "digits_cnn", "--out", "pruned"],
         _policy("r20.json", model="resnet20", consumers=["layer1.0.conv2"], channels=[16], keep=[8])),
    Case("policy for other layers of the same model", ("prunable layers differ", "decision 1"),
         ["prune", "--policy", "layers.json", "--out", "pruned"],
         _policy("layers.json", consumers=["features.1.0", "features.9.0", "features.4.0", "classifier"])),
], "Output directory": [
    Case("output directory that exists", ("run already exists", "--resume", "--overwrite"),
         ["search", "--out", "run"], _existing_run),
    Case("output directory that cannot be created", ("cannot write to output directory notes.txt/run",
                                                     "writable --out"),
         ["search", "--episodes", "2", "--out", "notes.txt/run"], _a_file),
    Case("--resume of a directory with no run", ("nothing to resume in fresh", "without --resume"),
         ["search", "--resume", "--out", "fresh"]),
    Case("--resume without --out", ("--resume needs --out",), ["search", "--resume"]),

    Case("--resume with settings other than the run's", ("run was started with other settings",
                                                         "--model resnet20 (the run has digits_cnn)",
                                                         "--ratio 0.3 (the run has 0.05)"),
         ["search", "--resume", "--out", "run", "--model", "resnet20", "--ratio", "0.3"], _stopped_run()),
    Case("--resume together with --overwrite", ("--resume continues a run and --overwrite replaces it",),
         ["search", "--resume", "--overwrite", "--out", "run"], _stopped_run()),
    Case("--resume with fewer episodes", ("--episodes 2 is fewer than the 3", "can only add episodes"),
         ["search", "--resume", "--out", "run", "--episodes", "2"], _stopped_run()),
    Case("--resume of a run whose config.json is corrupt", ("run/config.json is corrupt", "--overwrite"),
         ["search", "--resume", "--out", "run"], _corrupt_run),
    Case("--overwrite of the current directory", ("refuses to replace .", "current directory"),
         ["search", "--episodes", "2", "--overwrite", "--out", "."], _a_file),
    Case("--overwrite of a directory amc did not create", ("refuses to replace run", "not a run amc created",
                                                           RUN_MARKER),
         ["search", "--episodes", "2", "--overwrite", "--out", "run"], _existing_run),
    Case("--overwrite of a run holding other files", ("refuses to replace run", "files amc did not write (notes.txt)"),
         ["search", "--episodes", "2", "--overwrite", "--out", "run"], _run_with_other_files),
    Case("--overwrite through a symbolic link", ("refuses to replace link", "symbolic link"),
         ["search", "--episodes", "2", "--overwrite", "--out", "link"], _run_and_a_link),
    Case("--overwrite of the run that holds the command's own input (`amc prune`)",
         ("--overwrite would delete run/policy.json", "an input of this command"),
         ["prune", "--policy", "run/policy.json", "--out", "run", "--overwrite"], _run_holding_its_policy),
    Case("training checkpoint written over a file of a run (`amc train`)",
         ("run/model_finetuned.pt is a file of the amc run run", "another path"),
         ["train", "--model", "digits_cnn", "--data", "digits", "--epochs", "1", "--out", "run/model_finetuned.pt"],
         lambda tmp: _amc_run(tmp, **{"config.json": "{}"})),
    Case("output directory name longer than the file system allows", ("cannot use " + "o" * 256, "File name too long"),
         ["search", "--out", "o" * 256]),
    Case("run directory name longer than the file system allows (`amc report`)",
         ("cannot use " + "r" * 256, "File name too long", "another path"), ["report", "r" * 256]),
    Case("run directory name longer than the file system allows (`amc finetune`)",
         ("cannot use " + "f" * 256, "File name too long", "another path"), ["finetune", "f" * 256]),
], "Run files that parse but have the wrong structure": [
    Case("state.pt of another agent", ("run/state.pt does not hold the state of a DDPGAgent", "--overwrite"),
         ["search", "--resume", "--out", "run"],
         _stopped_run(state={"episode": 1, "agent": {"steps": 3}, "best": "", "rng": None})),
    Case("state.pt that is not a dict", ("run/state.pt has the wrong structure", "a list where an object belongs"),
         ["search", "--resume", "--out", "run"], _stopped_run(state=[1, 2])),
    Case("config.json with a list where an object belongs", ("run/config.json has the wrong structure",
                                                             "'search' is a list, not an object"),
         ["search", "--resume", "--out", "run"],
         lambda tmp: _amc_run(tmp, **{"config.json": '{"search": [1]}', "state.pt": "x"})),
    Case("config.json with a setting out of range", ("run/config.json is corrupt", "--seed must be at least 0"),
         ["search", "--resume", "--out", "run"], _stopped_run({"seed": -1})),
    Case("truncated latency calibration", ("run/latency_calibration.json has the wrong structure", "no 'scale'"),
         ["search", "--resume", "--out", "run"],
         _stopped_run({"target": "latency"}, **{"latency_calibration.json": '{"offset_ms": 0.1}'})),
    Case("summary.json of the wrong structure (`amc report`)", ("run/summary.json has the wrong structure",
                                                                "'macs' is a string"),
         ["report", "run"], lambda tmp: _amc_run(tmp, **{"config.json": '{"search": {}}', "episodes.jsonl": "{}\n",
                                                          "summary.json": '{"macs": "1.2M"}'})),
    Case("model.json of the wrong structure (`amc eval`)", ("run/model.json has the wrong structure",
                                                            "'info' is a list, not an object", "re-export"),
         ["eval", "run", "--data", "digits"],
         lambda tmp: _amc_run(tmp, **{"model.json": '{"info": []}', "model.pt": "x"})),
], "Hangs, tracebacks and misleading advice": [
    Case("settings file that is a FIFO (`amc search --config`)",
         ("cannot read config file search.toml", "a FIFO, not a regular file"),
         ["search", "--config", "search.toml", "--out", "run"], _fifo("search.toml")),
    Case("checkpoint that is a FIFO", ("cannot read checkpoint ck.pt", "a FIFO, not a regular file"),
         ["search", "--weights", "ck.pt", "--out", "run"], _fifo("ck.pt")),
    Case("data file that is a FIFO", ("data.npz is a FIFO", "not a data file or folder"), [*_CIFAR, "data.npz"],
         _fifo("data.npz")),
    Case("data path that is a device", ("/dev/zero is a device", "not a data file or folder"),
         [*_CIFAR, "/dev/zero"]),
    Case("policy file that is a FIFO (`amc prune`)", ("cannot read policy file policy.json", "a FIFO"),
         ["prune", "--policy", "policy.json", "--out", "pruned"], _fifo("policy.json")),
    Case("settings file whose out is not a path", ("out in search.toml must be a path", "got 3"),
         ["search", "--config", "search.toml"], lambda tmp: (tmp / "search.toml").write_text("out = 3\n")),
    Case("thread count beyond any machine", ("--threads must be at most 1024", "got 100000"),
         ["search", "--threads", "100000", "--out", "run"]),
    Case("`amc bench` batch too large to allocate", ("timing needs an input batch", "more memory than this machine",
                                                     "smaller --batch"),
         ["bench", "digits_cnn", "--batch", "1000000000000"]),
    Case("unknown timm model (its weights are not what is missing)", ("unknown timm model 'timm:no_such_net'",),
         ["search", "--model", "timm:no_such_net", "--out", "run"]),
    Case("unknown torchvision model (its weights are not what is missing)",
         ("unknown torchvision model 'tv:no_such_net'",), ["search", "--model", "tv:no_such_net", "--out", "run"]),
    Case("cache directory under a HOME that is a file (`--download`)",
         ("cannot use amc's cache directory notes.txt/.cache/amc/data", "set AMC_CACHE_DIR"),
         ["search", "--data", "cifar10", "--download", "--model", "resnet20", "--random-init", "--out", "run"],
         _a_file, env={"HOME": "notes.txt", "AMC_CACHE_DIR": ""}),
    Case("policy with a keep count that is not a whole number", ("half.json is corrupt", "keep holds 2.5"),
         ["prune", "--policy", "half.json", "--out", "pruned"], _policy("half.json", keep=[16, 32, 2.5, 64])),
    Case("model factory that calls sys.exit", ("model factory exits:build called sys.exit(3)", "return the network"),
         ["search", "--model", "exits:build", "--out", "run"], _module("exits", "import sys\n\n\ndef build():\n"
                                                                               "    sys.exit(3)\n")),
], "A run directory is data: no code it names runs, nothing is written through its links": [
    Case("model.json that names a shell command as its model factory (`amc eval`)",
         ("run/model.json names the model factory os:system, which is Python code", "--trust-model-code"),
         ["eval", "run"], _exported_run("os:system", command=f"touch {PAYLOAD_MARKER}")),
    Case("model.json that names a factory (`amc bench`)", ("run/model.json names the model factory tests.mynet:build",
                                                           "pass --trust-model-code"),
         ["bench", "run", "--repeats", "1"], _exported_run("tests.mynet:build")),
    Case("policy that names a factory as its model (`amc prune --policy`)",
         ("abort.json names the model factory os:abort", "pass --model os:abort or --trust-model-code"),
         ["prune", "--policy", "abort.json", "--out", "out"], _policy("abort.json", model="os:abort")),
    Case("settings file that names a factory (`amc search --config`)",
         ("evil.toml names the model factory os:system", "--trust-model-code"),
         ["search", "--config", "evil.toml", "--out", "run"], _settings_file("evil.toml", 'model = "os:system"\n')),
    Case("run whose config.json names a factory (`amc search --resume`)",
         ("run/config.json names the model factory os:system", "pass --model os:system or --trust-model-code"),
         ["search", "--resume", "--out", "run"], _stopped_run({"model": "os:system"})),
    Case("run lock that is a link to a file outside the run (`amc finetune`)",
         ("cannot use run file run/.amc-lock: it is a symbolic link", "neither follows links"),
         ["finetune", "run", "--epochs", "1"], _lock_replaced("link", _exported_run())),
    Case("run lock that is a link (`amc search --resume`)", ("run/.amc-lock: it is a symbolic link",),
         ["search", "--resume", "--out", "run"], _lock_replaced("link", _stopped_run())),
    Case("run lock that is a FIFO (`amc finetune`)", ("run/.amc-lock: it is a FIFO, not a regular file",),
         ["finetune", "run", "--epochs", "1"], _lock_replaced("fifo", _exported_run())),
    Case("--overwrite of a run holding a file of the user's in tensorboard/",
         ("refuses to replace run", "files amc did not write (tensorboard/notes.txt)"),
         ["search", "--overwrite", "--out", "run"], _run_with_user_files("tensorboard/notes.txt")),
    Case("--overwrite of a run holding a hidden file of the user's", ("files amc did not write (.x.tmp)",),
         ["search", "--overwrite", "--out", "run"], _run_with_user_files(".x.tmp")),
], "A run killed at any point: every command reads where it stands": [
    Case("`amc finetune` of a search that stopped before its export",
         ("cannot fine-tune run: it is export interrupted", "amc search --resume --out run"),
         ["finetune", "run", "--epochs", "1"], _exported_run(search_run=True)),
    Case("`amc eval` of a run whose export was interrupted",
         ("run holds an unfinished export", "amc search --resume --out run"),
         ["eval", "run"], _exported_run(search_run=True)),
    Case("`amc prune` again into an interrupted prune without --overwrite",
         ("output directory pruned already exists; pass --overwrite to replace it",),
         ["prune", "source", "--out", "pruned"], _interrupted_prune),
    Case("`amc search --resume` of a run `amc prune` wrote",
         ("pruned was written by `amc prune`", "again with --overwrite"),
         ["search", "--resume", "--out", "pruned"], _interrupted_prune),
], "Disk (a full disk is simulated: the test's sitecustomize makes fsync fail with ENOSPC)": [
    Case("disk full when the run starts", ("cannot save run/config.json", "No space left on device", "removed"),
         ["search", "--agent", "ddpg", "--episodes", "4", "--warmup", "2", "--out", "run"], env={"AMC_TEST_ENOSPC": "config.json:1"}),
    Case("disk full in the middle of a search", ("cannot save run/state.pt", "No space left on device",
                                                 "intact", "amc search --resume --out run"),
         ["search", "--agent", "ddpg", "--episodes", "6", "--warmup", "2", "--out", "run"], env={"AMC_TEST_ENOSPC": "state.pt:4"},
         leaves="state"),
]}

CASES: list[Case] = [case for cases in GROUPS.values() for case in cases]
