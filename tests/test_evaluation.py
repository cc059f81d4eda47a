"""evaluate(): clean/PGD/AutoAttack/certified accuracy and their ordering; the PGD-trained
baseline head; the accuracy-vs-radius plot."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from convexrobust.baselines import train_pgd_head
from convexrobust.certify import certified_radius
from convexrobust.data import stratified_subset
from convexrobust.errors import InvalidInputError, SolverUnavailableError
from convexrobust.evaluation import (
    certified_accuracy,
    check_autoattack_settings,
    evaluate,
    evaluate_on_subsets,
    format_table,
)
from convexrobust.networks.liresnet import LiResNet
from convexrobust.networks.two_layer import TwoLayerReLU

torch.set_num_threads(1)
KEYS = {"model", "radius", "clean", "pgd", "certified"}
needs_autoattack = pytest.mark.skipif(
    importlib.util.find_spec("pyautoattack") is None,
    reason="pyautoattack is not installed: pip install 'convexrobust[attack]'")


def _data(n: int = 240, d: int = 5, classes: int = 3, seed: int = 0):
    r = np.random.default_rng(seed)
    centers = 1.5 * r.standard_normal((classes, d))
    y = r.integers(0, classes, n)
    X = centers[y] + 0.7 * r.standard_normal((n, d))
    return torch.as_tensor(X), torch.as_tensor(y)


def _fitted_relu(X: torch.Tensor, y: torch.Tensor, m: int = 24, seed: int = 0) -> TwoLayerReLU:
    """Random hidden layer, ridge-regressed output layer: a nonlinear head with decent
    accuracy, in float64."""
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(m, X.shape[1], generator=g, dtype=torch.float64)
    b = torch.randn(m, generator=g, dtype=torch.float64)
    H = torch.relu(X @ U.T + b)
    C = int(y.max()) + 1
    T = nn.functional.one_hot(y, C).double() * 2 - 1
    alpha = torch.linalg.solve(H.T @ H + 1e-2 * torch.eye(m, dtype=torch.float64), H.T @ T)
    return TwoLayerReLU(U, b, alpha)


class Certified(nn.Module):
    """A head exposing its (sound) certificate, like the lead's RobustModel."""

    def __init__(self, net: nn.Module, scale: float = 1.0):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def certified_radius(self, x: torch.Tensor, y: torch.Tensor, norm: float | str = 2):
        return torch.as_tensor(certified_radius(self.net, x, y, norm).radius) * self.scale


class LinearBinary(nn.Module):
    """``f(x) = wᵀx + b`` with its exact distance to the boundary as certificate: ``|f| / ‖w‖₂``
    in ℓ2, ``|f| / ‖w‖₁`` in ℓ∞."""

    def __init__(self, d: int):
        super().__init__()
        self.lin = nn.Linear(d, 1).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    def certified_radius(self, x: torch.Tensor, y: torch.Tensor,
                         norm: float | str = 2) -> torch.Tensor:
        s = self.lin(x)[:, 0]
        correct = (s > 0).long() == y
        dual = 1 if str(norm) == "inf" else 2
        R = s.abs() / torch.linalg.vector_norm(self.lin.weight, ord=dual)
        return torch.where(correct, R, torch.zeros_like(R))


def _diagonal_classifier(n: int = 40, seed: int = 0):
    """``f(x) = x₀ − x₁`` on points of the unit square, a few labels flipped: the worst
    perturbation of every point (towards the diagonal) stays in the square, so an exact attack
    inside the pixel box breaks exactly the points with certified radius below ``r``."""
    model = LinearBinary(2)
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.lin.bias.zero_()
    X = torch.as_tensor(np.random.default_rng(seed).uniform(0, 1, (n, 2)))
    y = (X[:, 0] > X[:, 1]).long()
    y[:3] = 1 - y[:3]
    return model, X, y


def test_clean_accuracy_matches_a_direct_computation():
    X, y = _data()
    net = _fitted_relu(X, y)
    report = evaluate(net, (X, y), [0.0, 0.2], attacks=(), clamp=None, progress=False,
                      name="relu", batch_size=50)
    direct = float((net(X).argmax(1) == y).double().mean())
    assert report.n == len(y)
    assert [r["clean"] for r in report.records] == [direct, direct]
    # no attack: pgd reported only at radius 0 (where it is the clean accuracy); no
    # certified_radius method: certified is None, not an error
    assert report.records[0]["pgd"] == direct and report.records[1]["pgd"] is None
    assert all(r["certified"] is None for r in report.records)
    assert all(set(r) == KEYS and r["model"] == "relu" for r in report.records)


def test_a_model_that_cannot_certify_is_evaluated_empirically():
    X, y = _data(n=60)
    model = Certified(_fitted_relu(X, y))
    model.certifiable = False  # like a RobustModel without a guaranteed K_h
    report = evaluate(model, (X, y), (0.0, 0.2), pgd_steps=5, clamp=None, progress=False)
    assert all(r["certified"] is None and r["pgd"] is not None for r in report.records)
    model.certifiable = True
    report = evaluate(model, (X, y), (0.2,), certify=False, pgd_steps=5, clamp=None,
                      progress=False)
    assert report.records[0]["certified"] is None and report.violations == [None]


@pytest.mark.parametrize("norm, radii", [(2, (0.0, 0.1, 0.3, 0.6)), ("inf", (0.0, 0.05, 0.2))])
def test_certified_at_most_pgd_at_most_clean(norm, radii):
    X, y = _data()
    net = _fitted_relu(X, y)
    model = Certified(net)
    report = evaluate(model, (X, y), radii, norm=norm, pgd_steps=20, pgd_restarts=2,
                      clamp=None, progress=False, batch_size=64, name="head")
    clean = float((net(X).argmax(1) == y).double().mean())
    assert clean > 0.7
    R = certified_radius(net, X, y, norm).radius
    for rec in report.records:
        assert set(rec) == KEYS and rec["clean"] == clean
        assert rec["certified"] <= rec["pgd"] <= rec["clean"]
        assert rec["certified"] == pytest.approx(float(np.mean(R > rec["radius"])))
    assert report.records[0]["pgd"] == clean  # radius 0 skips the attack
    assert report.records[-1]["pgd"] < clean  # the attack does something
    assert report.violations == [0] * len(radii)
    assert set(report.seconds) == {"clean", "pgd", "certify"}
    assert sum(report.seconds.values()) <= report.total_seconds
    assert report.radii is not None and report.radii.shape == (len(y),)


def _least_squares_linear(X: torch.Tensor, y: torch.Tensor) -> LinearBinary:
    """A reasonable linear classifier: least squares on ±1 targets."""
    model = LinearBinary(X.shape[1])
    with torch.no_grad():
        A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
        sol = torch.linalg.lstsq(A, (2 * y - 1).double()[:, None]).solution
        model.lin.weight.copy_(sol[:-1].T)
        model.lin.bias.copy_(sol[-1])
    return model


def test_pgd_is_exact_on_a_linear_model():
    X, y = _data(classes=2, n=200)
    model = _least_squares_linear(X, y)
    radii = (0.0, 0.1, 0.25, 0.5, 1.0)
    report = evaluate(model, (X, y), radii, clamp=None, progress=False, pgd_restarts=1)
    for rec in report.records:  # PGD reaches the boundary of the ball: no gap to the certificate
        assert rec["pgd"] == rec["certified"] or rec["radius"] == 0


def test_input_forms_agree_and_mode_is_restored():
    X, y = _data(n=90)
    model = Certified(_fitted_relu(X, y))
    model.train()
    kw = {"norm": 2, "pgd_steps": 10, "pgd_restarts": 1, "clamp": None, "progress": False,
          "batch_size": 32}
    base = evaluate(model, (X, y), (0.0, 0.3), **kw).records
    assert model.training
    dataset = torch.utils.data.TensorDataset(X, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32)
    for data in ((X.numpy(), y.numpy()), dataset, loader):
        assert evaluate(model, data, (0.0, 0.3), **kw).records == base


def test_report_json_and_table(tmp_path):
    X, y = _data(n=60)
    report = evaluate(Certified(_fitted_relu(X, y)), (X, y), (0.0, 0.2), pgd_steps=5,
                      pgd_restarts=1, clamp=None, progress=False, name="h1")
    loaded = json.loads(report.to_json(tmp_path / "r.json"))
    assert loaded == json.loads((tmp_path / "r.json").read_text())
    assert loaded["records"] == report.records and loaded["n"] == 60 and loaded["norm"] == "2"
    table = report.table()
    assert "h1" in table and "certified" in table and len(table.splitlines()) == 4


def test_an_unsound_certificate_is_caught():
    X, y = _data(n=80)
    cheat = Certified(_fitted_relu(X, y), scale=1e6)  # claims far more than holds
    report = evaluate(cheat, (X, y), (0.0, 1.0), pgd_steps=20, clamp=None, progress=False)
    assert report.violations[1] > 0
    assert report.records[1]["certified"] > report.records[1]["pgd"]


def test_certified_accuracy_is_strict():
    R = torch.tensor([0.5, 1.0, 2.0, 3.0])
    ok = torch.tensor([True, True, True, False])
    assert certified_accuracy(R, ok, 0.5) == 0.5  # R = r is not certified at r
    assert certified_accuracy(R.numpy(), ok.numpy(), 0.0) == 0.75
    with pytest.raises(InvalidInputError):
        certified_accuracy(R, ok[:3], 0.1)


def test_clamp_box():
    r = np.random.default_rng(1)
    X = torch.as_tensor(r.uniform(0, 1, (80, 5)))
    y = torch.as_tensor((X[:, 0] + X[:, 1] > 1).long())
    model = Certified(_fitted_relu(X, y))
    report = evaluate(model, (X, y), (0.0, 0.1, 0.3), pgd_steps=10, progress=False)
    for rec in report.records:
        assert rec["certified"] <= rec["pgd"] <= rec["clean"]
    with pytest.raises(InvalidInputError, match="clamp"):
        evaluate(model, (X * 3, y), (0.1,), progress=False)


@pytest.mark.parametrize("case", ["length", "negative", "nan", "label", "fractional", "attack",
                                  "empty"])
def test_bad_input_is_rejected(case):
    X, y = _data(n=20)
    net = _fitted_relu(X, y)
    radii = (0.0, 0.1)
    kw = {"clamp": None, "progress": False}
    if case == "length":
        y = y[:-1]
    elif case == "negative":
        radii = (0.1, -0.1)
    elif case == "nan":
        X = X.clone()
        X[3, 1] = math.nan
    elif case == "label":
        y = y.clone()
        y[0] = 7
    elif case == "fractional":
        y = y.double() + 0.5
    elif case == "attack":
        kw["attacks"] = ("cw",)
    elif case == "empty":
        radii = ()
    with pytest.raises(InvalidInputError):
        evaluate(net, (X, y), radii, **kw)


def test_liresnet_gloro_certificate_is_never_broken_by_pgd():
    torch.manual_seed(0)
    model = LiResNet(depth=2, width=4, num_classes=3, in_channels=1, input_size=8,
                     neck_stride=2, neck_channels=2, neck_dim=8)
    x = torch.rand(150, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right, so radii are non-trivial
    y[:10] = (y[:10] + 1) % 3
    # radii around the median certified l2 radius (~0.01) of this random network
    for norm, radii in ((2, (0.0, 0.005, 0.02)), ("inf", (0.0, 0.0005, 0.002))):
        report = evaluate(model, (x, y), radii, norm=norm, attacks=("pgd_multitargeted",),
                          pgd_steps=20, pgd_restarts=1, progress=False)
        assert report.violations == [0, 0, 0]
        assert report.records[1]["certified"] > 0
        for rec in report.records:
            assert rec["certified"] <= rec["pgd"] <= rec["clean"]


def _separable(n: int = 200, seed: int = 0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, n)
    X = r.standard_normal((n, 5)) * 0.5
    X[:, 0] += np.where(y == 1, 2.0, -2.0)
    return X, y


def test_pgd_head_beats_an_untrained_head_and_picks_from_the_grid():
    X, y = _separable()
    Xv, yv = _separable(100, seed=1)
    lrs = (1e-3, 3e-2)
    res = train_pgd_head(X, y, radius=0.5, hidden=16, epochs=6, lrs=lrs, validation=(Xv, yv),
                         pgd_steps=5, eval_pgd_steps=20, progress=False)
    assert res.lr in lrs and set(res.lr_scores) == set(lrs)
    assert res.validation_robust_accuracy == max(res.lr_scores.values())
    assert isinstance(res.network, TwoLayerReLU) and res.network.n_outputs == 1
    g = torch.Generator().manual_seed(3)
    untrained = TwoLayerReLU(torch.randn(16, 5, generator=g), torch.randn(16, generator=g),
                             torch.randn(16, 1, generator=g))
    zv, tv = torch.as_tensor(Xv), torch.as_tensor(yv)
    base = evaluate(untrained, (zv, tv), (0.5,), clamp=None, pgd_steps=20, progress=False)
    trained = evaluate(Certified(res.network), (zv, tv), (0.5,), clamp=None, pgd_steps=20,
                       progress=False)
    assert trained.records[0]["pgd"] >= 0.9
    assert trained.records[0]["pgd"] > base.records[0]["pgd"] + 0.2
    assert trained.records[0]["certified"] <= trained.records[0]["pgd"]
    assert res.train_seconds > 0


def test_pgd_head_is_deterministic_under_seed():
    X, y = _data(n=120)  # three classes: cross-entropy path
    kw = {"radius": 0.2, "hidden": 8, "epochs": 2, "lrs": (1e-2,), "validation": 0.25,
          "pgd_steps": 3, "eval_pgd_steps": 5, "progress": False, "seed": 4}
    a = train_pgd_head(X, y, **kw)
    b = train_pgd_head(X, y, **kw)
    assert a.network.n_outputs == 3
    for name in ("weight", "bias", "output"):
        assert torch.equal(getattr(a.network, name), getattr(b.network, name))
    assert a.validation_robust_accuracy == b.validation_robust_accuracy
    with pytest.raises(InvalidInputError):
        train_pgd_head(X, y, radius=0.2, lr="auto", validation=None, progress=False)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from convexrobust.plots import plot_accuracy_vs_radius

    records = [{"model": m, "radius": r, "clean": 0.9, "pgd": 0.9 - r / 2 - k / 10,
                "certified": 0.8 - r / 2 - k / 10}
               for k, m in enumerate(("convex", "pgd")) for r in (0.0, 0.25, 0.5)]
    records.append({"model": "nocert", "radius": 0.5, "clean": 0.7, "pgd": 0.3,
                    "certified": None})
    path = plot_accuracy_vs_radius(records, tmp_path / "sub" / "acc.png", title="test")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 2000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(InvalidInputError):
        plot_accuracy_vs_radius([], tmp_path / "empty.png")


@needs_autoattack
@pytest.mark.parametrize("norm, radii", [(2, (0.0, 0.15, 1.5)), ("inf", (0.0, 0.1, 0.6))])
def test_autoattack_never_breaks_an_exact_certificate(norm, radii):
    """A linear classifier's certified radius is its exact distance to the boundary: the
    standard AutoAttack breaks no certified point, finds every other one (it is exact here),
    and beyond every margin breaks all points."""
    model, X, y = _diagonal_classifier()
    report = evaluate(model, (X, y), radii, norm=norm, attacks=("pgd", "autoattack"),
                      pgd_steps=20, progress=False)
    assert report.violations == [0, 0, 0]
    first, mid, last = report.records
    assert set(first) == KEYS | {"autoattack"} and first["autoattack"] == first["clean"] < 1
    assert 0 < mid["certified"] == mid["autoattack"] < mid["clean"]
    assert mid["pgd"] <= mid["autoattack"]
    assert last["autoattack"] == last["pgd"] == last["certified"] == 0.0
    assert report.config["pyautoattack"] == "0.2.0" and report.seconds["autoattack"] > 0


@needs_autoattack
def test_autoattack_is_reported_beside_pgd():
    """On a small 3-class image model (ℓ∞): a column of its own, below the clean accuracy;
    ``pgd`` counts a point robust only if both PGD and AutoAttack failed on it."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.rand(30, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 3
    kw = {"norm": "inf", "pgd_steps": 20, "progress": False, "name": "mlp"}
    pgd = evaluate(model, (x, y), (0.0, 0.03), **kw)
    both = evaluate(model, (x, y), (0.0, 0.03), attacks=("pgd", "autoattack"), **kw)
    rec = both.records[1]
    assert rec["autoattack"] < rec["clean"] == 0.9
    assert rec["pgd"] <= min(rec["autoattack"], pgd.records[1]["pgd"])
    assert rec["certified"] is None and both.violations == [None, None]
    assert set(both.seconds) == {"clean", "pgd", "certify", "autoattack"}
    assert "autoattack" in both.table().splitlines()[0]
    assert json.loads(both.to_json())["records"][1]["autoattack"] == rec["autoattack"]


@needs_autoattack
def test_autoattack_breaks_count_as_violations():
    model, X, y = _diagonal_classifier()
    exact = model.certified_radius
    model.certified_radius = lambda x, y: 1e6 * exact(x, y)  # claims far more than holds
    report = evaluate(model, (X, y), (1.5,), attacks=("autoattack",), progress=False)
    assert report.records[0]["autoattack"] == 0.0
    assert report.violations == [int((model(X)[:, 0] > 0).long().eq(y).sum())] != [0]


@needs_autoattack
def test_autoattack_fast_is_recorded_apart():
    """The cheap mode (APGD-CE alone) gets its own key, not AutoAttack's; on unbounded inputs
    (``clamp=None``) and a linear model it is exact, like the certificate."""
    X, y = _data(classes=2, n=120)
    report = evaluate(_least_squares_linear(X, y), (X, y), (0.0, 0.2, 0.5),
                      attacks=("autoattack_fast",), clamp=None, progress=False)
    for rec in report.records:
        assert set(rec) == KEYS | {"autoattack_fast"}
        assert rec["autoattack_fast"] == rec["pgd"] == rec["certified"] or rec["radius"] == 0
    assert report.violations == [0, 0, 0] and report.records[2]["pgd"] < report.records[1]["pgd"]


def test_autoattack_needs_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import fails as if not installed
    X, y = _data(n=20)
    with pytest.raises(SolverUnavailableError, match=r"pip install 'convexrobust\[attack\]'"):
        evaluate(_fitted_relu(X, y), (X, y), (0.1,), attacks=("pgd", "autoattack"),
                 clamp=None, progress=False)


def test_autoattack_rejects_the_l1_norm():
    X, y = _data(n=20)
    with pytest.raises(InvalidInputError, match="l1"):
        evaluate(_fitted_relu(X, y), (X, y), (0.1,), norm=1, attacks=("autoattack",),
                 clamp=None, progress=False)


@needs_autoattack
def test_autoattack_on_a_subset_attacks_exactly_it_and_says_so(monkeypatch):
    """evaluate_on_subsets: AutoAttack sees only the subset's points at its radii, PGD and the
    certificates all the data, and every record carries the number of points behind each
    number; the merged values are those of plain evaluations of each set."""
    import convexrobust.evaluation as evaluation

    X, y = _data(classes=2, n=120)
    model = _least_squares_linear(X, y)
    subset = stratified_subset(X, y, 30, seed=1)
    attacked: list[tuple[float, torch.Tensor]] = []
    real = evaluation.auto_attack

    def spy(model, x, y, **kwargs):
        attacked.append((kwargs["eps"], x))
        return real(model, x, y, **kwargs)

    monkeypatch.setattr(evaluation, "auto_attack", spy)
    kw = {"clamp": None, "progress": False, "pgd_steps": 10, "pgd_restarts": 1}
    report = evaluate_on_subsets(model, (X, y), (0.0, 0.2, 0.5),
                                 attacks=("pgd", "autoattack_fast"), autoattack_subset=subset,
                                 autoattack_radii=(0.2, 0.5), **kw)
    inside = {tuple(row.tolist()) for row in subset[0]}
    assert attacked and {eps for eps, _ in attacked} <= {0.2, 0.5}
    assert all(tuple(row.tolist()) in inside for _, x in attacked for row in x)
    assert sum(len(x) for eps, x in attacked if eps == 0.2) <= 30

    whole = evaluate(model, (X, y), (0.0, 0.2, 0.5), attacks=("pgd",), **kw)
    part = evaluate(model, subset, (0.2, 0.5), attacks=("autoattack_fast",), **kw)
    assert report.n == 120 and report.violations == [0, 0, 0]
    for rec, full in zip(report.records, whole.records, strict=True):
        assert (rec["n"], rec["n_pgd"]) == (120, 120)
        for key in ("clean", "pgd", "certified"):
            assert rec[key] == full[key]
        if rec["radius"] == 0:
            assert rec["autoattack_fast"] is None and "n_autoattack_fast" not in rec
    for rec, sub in zip(report.records[1:], part.records, strict=True):
        assert rec["n_autoattack_fast"] == 30 and rec["autoattack_fast"] == sub["autoattack_fast"]
        assert rec["clean_on_autoattack_subset"] == sub["clean"]
    assert report.config["subsets"] == {"autoattack": {"n": 30, "attacks": ["autoattack_fast"],
                                                       "radii": [0.2, 0.5]}}
    assert "autoattack_fast (n=30)" in format_table(report.records)

    # one subset object for both families: one evaluation attacks it with both
    both = evaluate_on_subsets(model, (X, y), (0.2,), attacks=("pgd", "autoattack_fast"),
                               pgd_subset=subset, autoattack_subset=subset, **kw)
    (rec,) = both.records
    assert (rec["n"], rec["n_pgd"], rec["n_autoattack_fast"]) == (120, 30, 30)
    assert rec["pgd"] <= rec["autoattack_fast"] <= rec["clean_on_pgd_subset"]
    assert list(both.config["subsets"]) == ["pgd"]


def test_subset_settings_are_checked_before_any_attack():
    X, y = _data(n=40)
    model = _fitted_relu(X, y)
    with pytest.raises(InvalidInputError, match="autoattack_radii 0.3 are not among"):
        evaluate_on_subsets(model, (X, y), (0.1, 0.2), autoattack_radii=(0.3,), clamp=None)
    with pytest.raises(InvalidInputError, match="turns AutoAttack off"):
        check_autoattack_settings(0, ("pgd", "autoattack"))
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidInputError, match="autoattack_limit"):
            check_autoattack_settings(bad, ())
    check_autoattack_settings(0, ("pgd",))
    check_autoattack_settings(None, ("autoattack",), (0.1,), (0.1, 0.2))


@pytest.mark.parametrize("norm, q", [("inf", 1), (2, 2)])
def test_fgsm_is_exact_on_a_linear_binary_model(norm, q):
    """For a linear score wᵀx + b one step of length ε along the sign (ℓ∞) or the normalised
    gradient (ℓ2) reaches the exact worst case, so FGSM's accuracy is the exact robust one."""
    torch.manual_seed(0)
    model = nn.Linear(6, 1).double().eval()
    x = torch.randn(300, 6, dtype=torch.float64)
    with torch.no_grad():
        y = (model(x)[:, 0] > 0).long()
        y[:20] = 1 - y[:20]
        margin = (2 * y - 1) * model(x)[:, 0]
    w = model.weight.detach()[0]
    eps = 0.2
    report = evaluate(model, (x, y), (eps,), norm=norm, attacks=("fgsm",), clamp=None,
                      progress=False)
    exact = float((margin - eps * torch.linalg.vector_norm(w, ord=q) > 0).double().mean())
    assert report.records[0]["pgd"] == pytest.approx(exact)
    assert 0 < exact < report.records[0]["clean"]
