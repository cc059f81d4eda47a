"""Feature extraction: PreActResNet18, the module-name hook, TorchScript backbones (and a
RobustModel on one, saved and reloaded without pickle), the identity map, guaranteed K_h,
batching, cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import convexrobust as cr
from convexrobust.errors import InvalidInputError
from convexrobust.features import FeatureExtractor, IdentityFeatures, extract_features
from convexrobust.networks import LiResNet, PreActResNet18
from convexrobust.networks.registry import TorchScriptNetwork, load_network
from convexrobust.networks.two_layer import TwoLayerReLU
from convexrobust.robust_model import RobustModel

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:DeprecationWarning")

torch.set_num_threads(1)


def _resnet(width: int = 4, seed: int = 0) -> PreActResNet18:
    torch.manual_seed(seed)
    model = PreActResNet18(num_classes=5, in_channels=3, width=width, head_hidden=12)
    # non-trivial batch-norm statistics, so eval mode differs from train mode
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 8, 8))
    return model


class _Counter:
    def __init__(self, module: nn.Module):
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *args: object) -> None:
        self.calls += 1


class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 10), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(10, 7), nn.ReLU(), nn.Linear(7, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class _Pairs(Dataset):
    """Yields (tensor, int) like most image datasets."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor):
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.X[i], int(self.y[i])


# ---------------------------------------------------------------------------- PreActResNet18


def test_preact_resnet_shapes_and_fc1_route():
    model = _resnet(width=4).eval()
    x = torch.randn(5, 3, 8, 8)
    assert model(x).shape == (5, 5)
    assert model.features(x).shape == (5, 32) and model.feature_dim == 32
    assert isinstance(cr.networks.PreActResNet18(width=2), nn.Module)

    seen = {}
    handle = model.fc1.register_forward_pre_hook(
        lambda m, args: seen.__setitem__("z", args[0]))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    fc2_calls = _Counter(model.fc2)

    extractor = FeatureExtractor(model, "fc1")
    with torch.no_grad():
        z = extractor(x)
        z_method = FeatureExtractor(model)(x)
    assert z.shape == (5, 8 * 4)
    torch.testing.assert_close(z, seen["z"])
    torch.testing.assert_close(z_method, seen["z"])
    assert fc2_calls.calls == 0  # the hook stopped the forward pass before fc2
    with torch.no_grad():  # the hook was removed: a plain forward reaches fc2 again
        torch.testing.assert_close(model(x), logits)
    assert fc2_calls.calls == 1
    torch.testing.assert_close(model.head(z), logits)


def test_preact_resnet_standard_size_and_save_load(tmp_path):
    model = PreActResNet18()
    n_params = sum(p.numel() for p in model.parameters())
    # 11.17M (ResNet-18 backbone) + 512·256 + 256 + 256·10 + 10 (head)
    assert 11_000_000 < n_params < 11_500_000
    assert model.fc1.in_features == 512

    small = _resnet(width=2).eval()
    small.save(tmp_path / "m.pt")
    loaded = PreActResNet18.load(tmp_path / "m.pt").eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), small(x))
    with pytest.raises(InvalidInputError):
        PreActResNet18(width=0)
    with pytest.raises(InvalidInputError, match="shape"):
        small.features(torch.randn(2, 1, 8, 8))


# ---------------------------------------------------------------------------- module names


def test_module_name_route_on_sequential_and_nested_names():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 2))
    x = torch.randn(6, 4)
    with torch.no_grad():
        torch.testing.assert_close(FeatureExtractor(seq, "2")(x), seq[1](seq[0](x)))

    net = _Nested()
    last = _Counter(net.head[2])
    with torch.no_grad():
        z = FeatureExtractor(net, "head.2")(x := torch.randn(6, 6))
        torch.testing.assert_close(z, net.head[1](net.head[0](net.body(x))))
        torch.testing.assert_close(FeatureExtractor(net, "head")(x), net.body(x))
    assert z.shape == (6, 7) and last.calls == 0


def test_inputs_of_conv_layers_are_flattened():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 1))
    x = torch.randn(3, 1, 5, 5)
    with torch.no_grad():
        z = FeatureExtractor(net, "2")(x)
    torch.testing.assert_close(z, torch.relu(net[0](x)).flatten(1))


def test_wrong_names_and_missing_features_are_explained():
    net = _Nested()
    with pytest.raises(InvalidInputError, match=r"'head\.2'") as info:
        FeatureExtractor(net, "head.3")
    assert "valid names" in str(info.value)
    with pytest.raises(InvalidInputError, match="feature_module"):
        FeatureExtractor(net)
    with pytest.raises(InvalidInputError):
        FeatureExtractor("not a module")  # type: ignore[arg-type]

    class _VGGLike(nn.Module):  # a `features` submodule is not a features() method
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Linear(2, 2)
            self.classifier = nn.Linear(2, 2)

    with pytest.raises(InvalidInputError, match="feature_module.*'features', 'classifier'"):
        FeatureExtractor(_VGGLike())

    class _Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.raises(InvalidInputError, match="not called"):
        FeatureExtractor(_Skips(), "unused")(torch.randn(1, 2))


# ---------------------------------------------------------------------------- TorchScript


class _Scriptable(nn.Module):
    """Six inputs -> five tanh features (exported) -> three scores."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 5), nn.Tanh())
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _script() -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    return torch.jit.script(_Scriptable().eval())


def test_torchscript_layers_are_refused_by_name_and_the_error_says_export_features():
    script = _script()
    for model, name in ((script, "fc"), (script, "body.0"),
                        (TorchScriptNetwork(script), "script.fc")):
        with pytest.raises(InvalidInputError, match=r"mark it @torch\.jit\.export"):
            FeatureExtractor(model, name)
    x = torch.randn(4, 6)
    for model in (script, TorchScriptNetwork(script)):  # the exported method is the route
        torch.testing.assert_close(FeatureExtractor(model)(x), script.features(x), rtol=0,
                                   atol=0)


@pytest.mark.parametrize("wrapped", [True, False], ids=["TorchScriptNetwork", "ScriptModule"])
def test_robust_model_on_torchscript_reloads_without_pickle(tmp_path, wrapped):
    script = _script()
    backbone = TorchScriptNetwork(script) if wrapped else script
    head = TwoLayerReLU(torch.randn(4, 5), torch.randn(4), torch.randn(4, 3))
    model = RobustModel(FeatureExtractor(backbone), head, center=torch.randn(5), scale=2.0,
                        threat=cr.L2(0.1), feature_lipschitz=None, input_shape=(6,)).eval()
    model.save(tmp_path / "m.pt")
    stored = torch.load(tmp_path / "m.pt", weights_only=True)  # nothing pickled
    assert stored["extractor"]["kind"] == "torchscript"
    x = torch.randn(7, 6)
    for loaded in (RobustModel.load(tmp_path / "m.pt"), load_network(tmp_path / "m.pt")):
        assert isinstance(loaded.extractor.model, TorchScriptNetwork)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
            torch.testing.assert_close(loaded.extractor(x), script.features(x), rtol=0, atol=0)


def test_identity_features_are_the_inputs_and_exactly_1_lipschitz(tmp_path):
    extractor = FeatureExtractor(IdentityFeatures())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert torch.equal(extractor(x), x.flatten(1)) and extractor.lipschitz_bound() == 1.0
    head = TwoLayerReLU(torch.randn(4, 6), torch.randn(4), torch.randn(4, 1))
    model = RobustModel(extractor, head, center=torch.zeros(6), scale=1.0, threat=cr.L2(0.1),
                        feature_lipschitz=1.0, input_shape=(2, 3))
    model.save(tmp_path / "m.pt")
    loaded = RobustModel.load(tmp_path / "m.pt")
    assert isinstance(loaded.extractor.model, IdentityFeatures)
    y = loaded.predict(x)
    torch.testing.assert_close(loaded.certified_radius(x, y), model.certified_radius(x, y),
                               rtol=0, atol=0)


# ---------------------------------------------------------------------------- Lipschitz bound


def test_liresnet_bound_is_sound_and_generic_is_none():
    torch.manual_seed(0)
    net = LiResNet(2, 8, 3, in_channels=1, input_size=8, neck_stride=4, neck_channels=8,
                   neck_dim=16).double().eval()
    extractor = FeatureExtractor(net)
    K = extractor.lipschitz_bound()
    assert isinstance(K, float) and K > 0
    assert FeatureExtractor(net, "neck_dense").lipschitz_bound() == K
    x = torch.rand(64, 1, 8, 8, dtype=torch.float64)
    x2 = x + 0.05 * torch.randn_like(x)
    with torch.no_grad():
        gap = (extractor(x) - extractor(x2)).norm(dim=1)
        torch.testing.assert_close(FeatureExtractor(net, "neck_dense")(x), extractor(x))
    assert (gap <= K * (x - x2).flatten(1).norm(dim=1)).all()

    assert FeatureExtractor(net, "head").lipschitz_bound() is None
    assert FeatureExtractor(_resnet()).lipschitz_bound() is None
    assert FeatureExtractor(_Nested(), "head").lipschitz_bound() is None


# ---------------------------------------------------------------------------- extract_features


def test_batching_invariance_labels_and_mode_restored():
    model = _resnet()
    model.train()
    model.layer2.eval()  # a mixed state must come back exactly
    modes = {name: m.training for name, m in model.named_modules()}
    extractor = FeatureExtractor(model, "fc1")
    X = torch.randn(10, 3, 8, 8)
    y = torch.arange(10) % 3
    Z3, y3 = extract_features(extractor, (X, y), batch_size=3, progress=False)
    Z64, y64 = extract_features(extractor, (X, y), batch_size=64, progress=False)
    assert Z3.dtype == torch.float32 and Z3.device.type == "cpu" and Z3.shape == (10, 32)
    torch.testing.assert_close(Z3, Z64)
    assert torch.equal(y3, y) and torch.equal(y64, y)
    assert {name: m.training for name, m in model.named_modules()} == modes
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(Z3, model.features(X))  # computed in eval mode

    Z_np, labels = extract_features(extractor, X.numpy(), batch_size=4, progress=False)
    torch.testing.assert_close(Z_np, Z3)
    assert labels is None


def test_dataset_and_dataloader_inputs():
    model = _resnet().eval()
    extractor = FeatureExtractor(model)
    X = torch.randn(9, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    Z, _ = extract_features(extractor, X, progress=False)
    for data in (TensorDataset(X, y), _Pairs(X, y), DataLoader(TensorDataset(X, y), 4)):
        Zd, yd = extract_features(extractor, data, batch_size=2, progress=False)
        torch.testing.assert_close(Zd, Z)
        assert torch.equal(yd, y)
    Zx, yx = extract_features(extractor, TensorDataset(X), batch_size=5, progress=False)
    torch.testing.assert_close(Zx, Z)
    assert yx is None


def test_invalid_data_is_rejected():
    extractor = FeatureExtractor(_resnet())
    X = torch.randn(4, 3, 8, 8)
    bad = X.clone()
    bad[2, 0, 1, 1] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        extract_features(extractor, bad, progress=False)
    with pytest.raises(InvalidInputError, match="empty"):
        extract_features(extractor, X[:0], progress=False)
    with pytest.raises(InvalidInputError, match="empty"):
        extract_features(extractor, TensorDataset(X[:0]), progress=False)
    with pytest.raises(InvalidInputError, match="samples"):
        extract_features(extractor, (X, torch.zeros(3)), progress=False)
    with pytest.raises(InvalidInputError):
        extract_features(extractor, [1, 2, 3], progress=False)

    class _Explodes(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) / 0.0

    with pytest.raises(InvalidInputError, match="features contain NaN or inf"):
        extract_features(_Explodes(), torch.ones(2, 3), progress=False)


def test_cache_hit_skips_the_model_and_stale_cache_is_recomputed(tmp_path, caplog):
    model = _resnet().eval()
    calls = _Counter(model.stem)
    extractor = FeatureExtractor(model, "fc1")
    X = torch.randn(7, 3, 8, 8)
    y = torch.arange(7)
    path = tmp_path / "sub" / "features.pt"

    Z, labels = extract_features(extractor, (X, y), batch_size=4, progress=False, cache=path)
    assert path.exists() and calls.calls == 2
    Z2, labels2 = extract_features(extractor, (X, y), batch_size=3, progress=False, cache=path)
    assert calls.calls == 2  # a hit: the model was not run
    assert torch.equal(Z2, Z) and torch.equal(labels2, labels)
    assert [p.name for p in path.parent.iterdir()] == ["features.pt"]  # no temporary left

    with caplog.at_level(logging.INFO, logger="convexrobust.features"):
        X_changed = X.clone()
        X_changed[3, 1, 2, 2] += 1.0
        Z3, _ = extract_features(extractor, (X_changed, y), progress=False, cache=path)
    assert calls.calls == 3 and "stale" in caplog.text
    assert not torch.equal(Z3, Z)
    with torch.no_grad():
        model.fc1.weight.zero_()  # fc1's weights do not affect its input, but they are hashed
    Z4, _ = extract_features(extractor, (X_changed, y), progress=False, cache=path)
    assert calls.calls == 4 and torch.equal(Z4, Z3)
    extract_features(extractor, (X_changed, y), progress=False, cache=path)
    assert calls.calls == 4
    # a different feature layer with the same model and data is a different cache entry
    extract_features(FeatureExtractor(model), (X_changed, y), progress=False, cache=path)
    assert calls.calls == 5

    path.write_bytes(b"not a torch file")
    Z5, _ = extract_features(extractor, (X_changed, y), progress=False, cache=path)
    assert calls.calls == 6 and torch.equal(Z5, Z3)


def test_cache_with_datasets(tmp_path):
    model = _resnet().eval()
    calls = _Counter(model.stem)
    extractor = FeatureExtractor(model)
    X = torch.randn(6, 3, 8, 8)
    y = np.arange(6) % 2
    data = _Pairs(X, torch.from_numpy(y))
    path = tmp_path / "f.pt"
    Z, labels = extract_features(extractor, data, progress=False, cache=path)
    Z2, labels2 = extract_features(extractor, data, progress=False, cache=path)
    assert calls.calls == 1 and torch.equal(Z, Z2) and torch.equal(labels, labels2)
    extract_features(extractor, _Pairs(X + 1, torch.from_numpy(y)), progress=False,
                     cache=path)
    assert calls.calls == 2


def test_large_tensor_checksum_sees_unsampled_rows(tmp_path):
    calls = _Counter(flatten := nn.Flatten())
    X = torch.randn(600, 2, 2)
    path = tmp_path / "f.pt"
    extract_features(flatten, X, batch_size=1000, progress=False, cache=path)
    extract_features(flatten, X.clone(), batch_size=1000, progress=False, cache=path)
    assert calls.calls == 1
    changed = X.clone()
    changed[1] += 0.5  # row 1 is not among the 256 hashed exactly
    Z, _ = extract_features(flatten, changed, batch_size=1000, progress=False, cache=path)
    assert calls.calls == 2 and torch.equal(Z, changed.flatten(1))
    swapped = X.clone()
    swapped[[1, 4]] = X[[4, 1]]  # same moments, different order
    extract_features(flatten, swapped, batch_size=1000, progress=False, cache=path)
    assert calls.calls == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_matches_cpu_and_moves_the_model_back():
    model = _resnet().eval()
    X = torch.randn(5, 3, 8, 8)
    Z_cpu, _ = extract_features(FeatureExtractor(model), X, progress=False)
    Z_gpu, _ = extract_features(FeatureExtractor(model), X, device="cuda", progress=False)
    assert Z_gpu.device.type == "cpu" and next(model.parameters()).device.type == "cpu"
    torch.testing.assert_close(Z_gpu, Z_cpu, rtol=1e-4, atol=1e-5)


def test_registry_reads_old_and_new_network_files_alike(tmp_path):
    from convexrobust.cli import load_network
    from convexrobust.networks.registry import ARCHITECTURES, architecture_of

    nets = {"LiResNet": LiResNet(depth=1, width=2, num_classes=2, in_channels=1, input_size=4,
                                 neck_stride=2, neck_channels=2, neck_dim=2),
            "PreActResNet18": _resnet(width=2)}
    assert set(nets) == set(ARCHITECTURES)
    for name, net in nets.items():
        net.save(tmp_path / f"{name}.pt")
        assert torch.load(tmp_path / f"{name}.pt", weights_only=True)["architecture"] == name
        # a file from before the "architecture" key: config and weights only
        torch.save({"config": net.config, "state_dict": net.state_dict()},
                   tmp_path / f"{name}-old.pt")
        assert architecture_of({"config": net.config}) == name
        for path in (tmp_path / f"{name}.pt", tmp_path / f"{name}-old.pt"):
            for loaded in (load_network(path), ARCHITECTURES[name].load(path)):
                assert type(loaded) is type(net)
                for key, value in net.state_dict().items():
                    assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(InvalidInputError, match="not a PreActResNet18"):
        PreActResNet18.load(tmp_path / "LiResNet.pt")
    with pytest.raises(InvalidInputError, match="no LiResNet file"):
        LiResNet.load(tmp_path / "missing.pt")
