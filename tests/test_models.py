"""The zoo builds every model by name with the right metadata, and checkpoints load or fail clearly."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from amc import models
from amc.errors import AmcError, CheckpointError, UnknownModelError
from amc.models.cifar_resnet import PadShortcut

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
AKAMASTER = SHARED_DATA / "pretrained" / "akamaster-cifar-resnet"
CIFAR_NPZ = SHARED_DATA / "cifar10-jpeg" / "cifar10_jpeg.npz"
ZOO = [name for name in models.list_models() if not name.startswith("tv:")]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)


class NotATensor:
    """A custom class: pickling it embeds a reference to code, which weights_only loading must refuse."""


def _akamaster_checkpoint(depth: int) -> Path:
    if not AKAMASTER.is_dir():
        pytest.skip(f"akamaster checkpoints not found at {AKAMASTER} (shared test data beside the repo)")
    matches = sorted(AKAMASTER.glob(f"resnet{depth}-*.th"))
    if not matches:
        pytest.skip(f"no resnet{depth}-*.th in {AKAMASTER}")
    return matches[0]


def _perturb_batchnorm_stats(model: nn.Module) -> None:
    """Run a few training-mode batches so running stats differ from their initial values."""
    model.train()
    shape = models.model_info(model).input_shape
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, *shape))
    model.eval()


def test_list_models_names_the_whole_zoo_and_some_torchvision():
    names = models.list_models()
    for expected in ["resnet20", "resnet32", "resnet44", "resnet56", "plain20", "vgg16",
                     "mobilenet_v1", "mobilenet_v2", "digits_cnn"]:
        assert expected in names
    assert any(name.startswith("tv:") for name in names)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_builds_runs_and_is_traceable(name):
    model = models.create(name).eval()
    info = models.model_info(model)
    assert info.name == name and info.num_classes == (1000 if name == "mobilenet_v1_224" else 10)
    assert info.kwargs == {}
    assert len(info.mean) == len(info.std) == info.input_shape[0]
    x = torch.randn(2, *info.input_shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, info.num_classes)
    clone = copy.deepcopy(model)
    assert models.model_info(clone) == info
    with torch.no_grad():
        assert torch.equal(clone(x), out)
    graph = tp.DependencyGraph().build_dependency(model, torch.randn(1, *info.input_shape))
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert len(graph.get_pruning_group(first_conv, tp.prune_conv_out_channels, [0])) > 1


@pytest.mark.parametrize("name, shape, mean", [
    ("resnet56", (3, 32, 32), IMAGENET_MEAN),
    ("plain20", (3, 32, 32), IMAGENET_MEAN),
    ("vgg16", (3, 32, 32), CIFAR_MEAN),
    ("mobilenet_v2", (3, 32, 32), CIFAR_MEAN),
    ("digits_cnn", (1, 8, 8), (0.5,)),
])
def test_model_info_metadata(name, shape, mean):
    info = models.model_info(models.create(name))
    assert info.input_shape == shape
    assert info.mean == mean


def test_mobilenet_v1_224_is_the_published_network():
    """AMC's mobile setting: 569M MACs and 4.2M parameters at 224x224, as in the MobileNet paper's Table 8."""
    from amc import count_macs, count_params
    model = models.create("mobilenet_v1_224").eval()
    assert models.model_info(model).input_shape == (3, 224, 224)
    assert round(count_macs(model, (3, 224, 224)) / 1e6) == 569 and round(count_params(model) / 1e5) == 42
    assert models.create("mobilenet_v1").features[0][0].stride == (1, 1)  # the CIFAR one keeps its stem


def test_num_classes_override_changes_head_and_info():
    model = models.create("resnet20", num_classes=100).eval()
    assert models.model_info(model).num_classes == 100
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownModelError) as caught:
        models.create("resnet5")
    message = str(caught.value)
    assert "unknown model 'resnet5'" in message
    assert "resnet56" in message and "resnet20" in message and "amc models" in message


def test_torchvision_name_without_prefix_suggests_prefix():
    with pytest.raises(UnknownModelError, match="tv:resnet50"):
        models.create("resnet50")


def test_unknown_torchvision_name_suggests_close_torchvision_names():
    with pytest.raises(UnknownModelError, match="tv:resnet50"):
        models.create("tv:resnet5")


def test_torchvision_model_builds_and_runs_small_input():
    model = models.create("tv:resnet18", num_classes=10).eval()
    info = models.model_info(model)
    assert info.name == "tv:resnet18" and info.input_shape == (3, 224, 224) and info.mean == IMAGENET_MEAN
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_unaccepted_option_is_a_user_error():
    with pytest.raises(AmcError, match="width_mult"):
        models.create("resnet20", width_mult=0.5)


def test_model_info_requires_metadata():
    with pytest.raises(AmcError, match="amc.models.create"):
        models.model_info(nn.Linear(3, 4))


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_mobilenet_width_mult_half(name):
    full = models.create(name)
    half = models.create(name, width_mult=0.5).eval()
    assert models.model_info(half).kwargs == {"width_mult": 0.5}
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in full.parameters())
    for module in half.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels != 3:
            assert module.out_channels % 8 == 0  # widths stay multiples of 8
    with torch.no_grad():
        assert half(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(AmcError, match="width_mult"):
        models.create(name, width_mult=0)


def test_plain20_has_no_shortcuts_while_resnet20_does():
    plain = models.create("plain20")
    assert not any("shortcut" in name for name, _ in plain.named_modules())
    assert not any(isinstance(m, (PadShortcut, nn.Identity)) for m in plain.modules())
    resnet = models.create("resnet20")
    assert sum(isinstance(m, PadShortcut) for m in resnet.modules()) == 2  # first block of stages 2 and 3
    # the option-A shortcut has no weights, so both nets have identical parameters
    assert list(plain.state_dict()) == list(resnet.state_dict())


def test_cifar_resnet_stage_widths_narrow_every_layer_and_pad_the_shortcuts_to_match():
    from amc.cost import count_macs
    from amc.models.cifar_resnet import CifarResNet

    narrow, full = CifarResNet(1, stage_channels=(8, 16, 32)), CifarResNet(1)
    assert narrow(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert narrow.linear.in_features == 32 and narrow.layer2[0].shortcut.pad_before == 4
    # every conv is narrowed in and out by half (the stem's input excepted), so MACs fall to about a quarter
    assert 0.25 < count_macs(narrow, (3, 32, 32)) / count_macs(full, (3, 32, 32)) < 0.27


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "dataparallel"])
def test_load_weights_round_trip(tmp_path, wrap):
    source = models.create("resnet20")
    _perturb_batchnorm_stats(source)
    state = source.state_dict()
    saved = {"raw": state, "state_dict": {"state_dict": state, "epoch": 3, "model": "resnet20"},
             "model": {"model": state}, "dataparallel": {f"module.{k}": v for k, v in state.items()}}[wrap]
    path = tmp_path / "weights.pt"
    torch.save(saved, path)
    loaded = models.create("resnet20", weights=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_mismatched_architecture_names_the_keys(tmp_path):
    path = tmp_path / "resnet20.pt"
    torch.save(models.create("resnet20").state_dict(), path)
    with pytest.raises(CheckpointError) as caught:
        models.load_weights(models.create("resnet32"), path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"checkpoint {path} does not match model resnet32" in message
    assert "missing keys [layer1.3.conv1.weight" in message and "check --model" in message


def test_mismatched_shapes_are_reported(tmp_path):
    path = tmp_path / "resnet20-100.pt"
    torch.save(models.create("resnet20", num_classes=100).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape mismatch linear.weight: ckpt \(100, 64\) vs model \(10, 64\)"):
        models.load_weights(models.create("resnet20"), path)


def test_unexpected_keys_are_reported(tmp_path):
    state = models.create("digits_cnn").state_dict()
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \[extra.weight\]"):
        models.load_weights(models.create("digits_cnn"), path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt; check the path"):
        models.load_weights(models.create("digits_cnn"), tmp_path / "nope.pt")


@pytest.mark.parametrize("content", ["random", "truncated", "empty"])
def test_unreadable_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "truncated":
        torch.save(models.create("digits_cnn").state_dict(), path)
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as caught:
        models.load_weights(models.create("digits_cnn"), path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read checkpoint {path} (")
    assert "saved with torch.save?" in message


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="NotATensor.*refused"):
        models.load_weights(models.create("digits_cnn"), path)


class CreatesFile:
    """A pickled payload: unpickling it calls open(path, "w"), so the file's existence proves it ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_pickled_payload_is_refused_without_running(tmp_path):
    from amc import load_pruned
    from amc.export import save_pruned

    marker = tmp_path / "payload-ran"
    state = {**models.create("digits_cnn").state_dict(), "extra": CreatesFile(marker)}
    checkpoint = tmp_path / "evil.pt"
    torch.save(state, checkpoint)
    with pytest.raises(CheckpointError, match="evil.pt contains code/objects other than tensors .* refused"):
        models.load_weights(models.create("digits_cnn"), checkpoint)
    # an exported model is rebuilt from model.json and tensors only: a doctored model.pt is refused too
    run = tmp_path / "run"
    run.mkdir()
    save_pruned(models.create("digits_cnn"), run)
    torch.save(state, run / "model.pt")
    with pytest.raises(CheckpointError, match="cannot read .*model.pt"):
        load_pruned(run)
    assert not marker.exists()
    torch.load(checkpoint, weights_only=False)  # the control: the payload is live, plain unpickling runs it
    assert marker.exists()


def test_checkpoint_without_state_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        models.load_weights(models.create("digits_cnn"), path)


def test_bundled_weights_absent_for_unknown_name():
    assert models.bundled_weights("no_such_model") is None


@pytest.mark.shared_data
@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_akamaster_checkpoints_load_strictly(depth):
    path = _akamaster_checkpoint(depth)
    model = models.create(f"resnet{depth}", weights=path)
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.conv1.weight, stored["module.conv1.weight"])
    assert torch.equal(model.linear.bias, stored["module.linear.bias"])


@pytest.mark.shared_data
def test_akamaster_resnet20_is_accurate_on_cifar10():
    """Checks the architecture, not only the names: wrong shortcuts or pooling would ruin accuracy."""
    path = _akamaster_checkpoint(20)
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"CIFAR-10 not found at {CIFAR_NPZ} (shared test data beside the repo)")
    data = np.load(CIFAR_NPZ)
    # the file is class-major, so take a spread of indices rather than the first few
    pick = np.random.default_rng(0).permutation(len(data["test_y"]))[:400]
    model = models.create("resnet20", weights=path).eval()
    info = models.model_info(model)
    pixels = torch.from_numpy(data["test_x"][pick]).permute(0, 3, 1, 2).float() / 255
    x = (pixels - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        accuracy = (model(x).argmax(1).numpy() == data["test_y"][pick]).mean()
    assert accuracy > 0.75  # 81% measured on the full JPEG test set


def test_a_torchvision_cnn_takes_the_datas_resolution():
    """CIFAR-sized data with tv:resnet18 is searched at 32 px, not refused for not being 224 px."""
    small = models.create("tv:resnet18", num_classes=10, input_shape=(3, 32, 32)).eval()
    assert models.model_info(small).input_shape == (3, 32, 32)
    with torch.no_grad():
        assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert models.model_info(models.create("tv:resnet18")).input_shape == (3, 224, 224)
    assert models.model_info(models.create("tv:resnet18", input_shape=(1, 32, 32))).input_shape == (3, 224, 224)
