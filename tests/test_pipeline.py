"""retrain_last_two_layers and RobustModel: sound certificates, persistence, the module-name
route, validation-only model selection and typed errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import convexrobust as cr
from convexrobust.errors import CertificateUnavailableError, InvalidInputError
from convexrobust.evaluation import evaluate
from convexrobust.networks import LiResNet
from convexrobust.pipeline import choose_candidate, pgd_trained_head, retrain_last_two_layers
from convexrobust.robust_model import RobustModel

torch.set_num_threads(1)

GRID = {"beta": (1e-3, 1e-2), "radius_scale": (1.0,), "n_patterns": (12,)}


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 8×8 images: a bright square in one of three places, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.15 * torch.rand(n, 1, 8, 8, generator=gen)
    for c, (r, col) in enumerate(((0, 0), (4, 4), (0, 4))):
        x[y == c, :, r:r + 4, col:col + 4] += 0.6
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def liresnet() -> LiResNet:
    torch.manual_seed(0)
    # features: 2 channels on a 2×2 grid = 8 dimensions, small enough for a conic solver
    return LiResNet(depth=2, width=4, num_classes=3, in_channels=1, input_size=8,
                    neck_stride=4, neck_channels=2, neck_dim=8).eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, ...]:
    return (*_images(240, seed=1), *_images(510, seed=2))


@pytest.fixture(scope="module", params=["polynomial", "relu"])
def robust(request, liresnet, data) -> RobustModel:
    x, y, _, _ = data
    # the polynomial heads by the torch solver: "auto" would give these 192-sample robust SDPs
    # to Clarabel, whose cvxpy compilation of one LMI per sample dominates the suite's time
    solver = "torch" if request.param == "polynomial" else "auto"
    return retrain_last_two_layers(liresnet, (x, y), head=request.param, threat=cr.L2(0.05),
                                   grid=GRID, solver=solver, progress=False)


def _check_pgd_never_breaks_a_certificate(robust: RobustModel, x_test: torch.Tensor,
                                           y_test: torch.Tensor, restarts: int) -> None:
    radius = robust.certified_radius(x_test, y_test)
    assert radius.dtype == torch.float64 and radius.shape == (len(y_test),)
    wrong = robust.predict(x_test) != y_test
    assert torch.all(radius[wrong] == 0)
    radii = (0.0, 0.02, 0.05, 0.1)
    report = evaluate(robust, (x_test, y_test), radii, attacks=("pgd", "pgd_multitargeted"),
                      pgd_steps=50, pgd_restarts=restarts, progress=False)
    assert report.violations == [0] * len(radii)
    for rec in report.records:
        assert rec["certified"] <= rec["pgd"] <= rec["clean"]
    assert report.records[0]["clean"] > 0.9
    assert report.records[1]["certified"] > 0.5  # the certificates are not vacuous


def test_certificates_are_never_broken_by_pgd(robust, data):
    _, _, x_test, y_test = data
    assert robust.certifiable
    _check_pgd_never_breaks_a_certificate(robust, x_test[:200], y_test[:200], restarts=1)


@pytest.mark.slow
def test_certificates_are_never_broken_by_a_stronger_pgd_on_500_points(robust, data):
    _, _, x_test, y_test = data
    assert len(y_test) >= 500
    _check_pgd_never_breaks_a_certificate(robust, x_test, y_test, restarts=2)


def test_certificate_composes_the_head_radius_with_the_bound(robust, liresnet, data):
    _, _, x_test, y_test = data
    K = liresnet.lipschitz_bound("guaranteed", "features")
    assert robust.feature_lipschitz == pytest.approx(K)
    z = robust.normalized_features(x_test[:50])
    head = cr.certified_radius(robust.head, z, y_test[:50], 2).radius
    np.testing.assert_allclose(robust.certified_radius(x_test[:50], y_test[:50]).numpy(),
                               head * robust.scale / K, rtol=1e-12)
    linf = robust.certified_radius(x_test[:50], y_test[:50], norm="inf").numpy()
    np.testing.assert_allclose(linf, head * robust.scale / K / math.sqrt(64), rtol=1e-12)


def test_model_selection_uses_validation_scores_only(robust):
    info = robust.info
    scored = [c for c in info["candidates"] if "val_robust" in c]
    assert len(scored) == 2 and info["n_validation"] > 0
    best = scored[choose_candidate(scored, info["n_validation"])]
    assert info["chosen"]["beta"] == best["beta"]
    assert info["feature_radius"] == pytest.approx(
        0.05 * robust.feature_lipschitz / robust.scale)


def test_choice_is_the_cleanest_candidate_within_one_standard_error_of_the_most_robust():
    def rec(robust: float, clean: float) -> dict:
        return {"val_robust": robust, "val_clean": clean}

    # on 10,000 validation points one standard error at p = 0.48 is 0.005: a one-point lead
    # in robust accuracy (0.4827 vs 0.4826) is no reason to lose 0.9 points of clean accuracy
    cifar = [rec(0.4826, 0.5888), rec(0.4827, 0.5803), rec(0.4722, 0.5596)]
    assert choose_candidate(cifar, 10_000) == 0
    # a lead of more than one standard error decides
    assert choose_candidate([rec(0.40, 0.70), rec(0.48, 0.58)], 10_000) == 1
    # on 100 points the standard error is 0.05: 0.45 is as good as 0.48
    assert choose_candidate([rec(0.45, 0.70), rec(0.48, 0.58)], 100) == 0
    # exact ties: the higher robust accuracy, then the earlier candidate
    assert choose_candidate([rec(0.47, 0.6), rec(0.48, 0.6)], 10_000) == 1
    assert choose_candidate([rec(0.5, 0.6), rec(0.5, 0.6)], 10_000) == 0
    assert choose_candidate([rec(1.0, 0.9), rec(0.99, 1.0)], 10_000) == 0  # p = 1: no spread
    with pytest.raises(InvalidInputError, match="no candidate"):
        choose_candidate([], 10)


def test_save_and_load_give_identical_outputs(robust, data, tmp_path):
    _, _, x_test, y_test = data
    robust.save(tmp_path / "model.pt")
    loaded = RobustModel.load(tmp_path / "model.pt")
    with torch.no_grad():
        assert torch.equal(robust(x_test), loaded(x_test))
    assert torch.equal(robust.certified_radius(x_test[:40], y_test[:40]),
                       loaded.certified_radius(x_test[:40], y_test[:40]))
    assert loaded.info["chosen"] == robust.info["chosen"]


def test_gated_relu_head_is_a_third_family_evaluated_empirically(liresnet, data, tmp_path):
    x, y, x_test, y_test = data
    model = retrain_last_two_layers(liresnet, (x, y), head="gated_relu", threat=cr.L2(0.05),
                                    grid={"beta": (1e-3,), "n_patterns": (12,)},
                                    progress=False)
    assert isinstance(model.head, cr.TwoLayerGatedReLU)
    # the LiResNet's bound sets the validation radius, but the gated head certifies nothing
    assert not model.certifiable and model.info["certified"] is False
    assert model.info["feature_radius"] == pytest.approx(
        0.05 * liresnet.lipschitz_bound("guaranteed", "features") / model.scale)
    assert {c["radius_scale"] for c in model.info["candidates"]} == {1.0}
    with pytest.raises(CertificateUnavailableError):
        model.certified_radius(x_test[:5], y_test[:5])
    report = evaluate(model, (x_test, y_test), (0.0, 0.05), pgd_steps=10, progress=False)
    assert report.records[0]["certified"] is None and report.records[0]["clean"] > 0.8
    model.save(tmp_path / "gated.pt")
    loaded = RobustModel.load(tmp_path / "gated.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x_test), model(x_test))
    with pytest.raises(InvalidInputError, match="radius_scale"):
        retrain_last_two_layers(liresnet, (x, y), head="gated_relu", threat=cr.L2(0.05),
                                grid={"radius_scale": (2.0,)}, progress=False)


def test_refit_trains_the_chosen_head_on_training_and_validation_data(liresnet, data):
    x, y, _, _ = data
    grid = {"beta": (1e-3, 1e-2), "n_patterns": (12,)}
    kept = retrain_last_two_layers(liresnet, (x, y), head="gated_relu", threat=cr.L2(0.05),
                                   grid=grid, progress=False)
    assert kept.info["refitted"] is None
    refit = retrain_last_two_layers(liresnet, (x, y), head="gated_relu", threat=cr.L2(0.05),
                                    grid=grid, refit=True, progress=False)
    info = refit.info
    assert info["chosen"] == kept.info["chosen"]  # the same selection, then one more solve
    assert info["refitted"]["n_train"] == info["n_train"] + info["n_validation"] == len(y)
    assert info["refitted"]["status"] == "optimal" and info["times"]["refit"] > 0
    # the refitted head is another network than the one chosen on the training split
    with torch.no_grad():
        assert not torch.equal(refit.head.weight, kept.head.weight)


def test_grid_candidates_warm_start_each_other_without_moving_the_optima(liresnet, data):
    """Each torch solve of the grid starts from the candidate solved before it (and says so);
    with ``warm_start=False`` every one starts from zero, and both reach the same objectives."""
    x, y, _, _ = data
    grid = {"beta": (1e-3, 1e-2), "radius_scale": (1.0, 1.5)}
    options = {"tol": 1e-6}
    runs = [retrain_last_two_layers(liresnet, (x, y), head="polynomial", threat=cr.L2(0.05),
                                    grid=grid, solver="torch", solver_options=options,
                                    warm_start=warm, progress=False).info["candidates"]
            for warm in (True, False)]
    warm, cold = runs
    assert [c.get("warm_started", False) for c in warm] == [False, True, True, True]
    assert not any(c.get("warm_started", False) for c in cold)
    for w, c in zip(warm, cold, strict=True):
        assert w["objective"] == pytest.approx(c["objective"], rel=1e-4)
    with pytest.raises(InvalidInputError, match="warm_start"):
        retrain_last_two_layers(liresnet, (x, y), head="polynomial", threat=cr.L2(0.05),
                                grid=grid, warm_start="yes", progress=False)


def test_a_polynomial_refit_starts_from_the_chosen_candidate_without_moving_its_optimum(
        liresnet, data):
    """The refit starts from the chosen candidate's point and dual estimates (the validation
    samples' made by the solver) and reaches the objective of a refit from zero."""
    x, y, _, _ = data
    grid = {"beta": (1e-2,), "radius_scale": (1.0,)}
    refits = [retrain_last_two_layers(liresnet, (x, y), head="polynomial", threat=cr.L2(0.05),
                                      grid=grid, solver="torch", solver_options={"tol": 1e-6},
                                      refit=True, warm_start=warm,
                                      progress=False).info["refitted"]
              for warm in (True, False)]
    warm, cold = refits
    assert warm.get("warm_started") is True and cold.get("warm_started", False) is False
    assert warm["status"] == cold["status"] == "optimal"
    assert warm["objective"] == pytest.approx(cold["objective"], rel=1e-4)


class _Custom(nn.Module):
    """A user's network: a conv body and a two-layer head named fc1, fc2."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 2, 4, stride=4), nn.Flatten())
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.body(x))))


def test_module_name_route_on_a_custom_network(data, tmp_path):
    x, y, x_test, y_test = data
    torch.manual_seed(0)
    net = _Custom().eval()
    empirical = retrain_last_two_layers(net, (x, y), head="relu", threat=cr.Linf(0.02),
                                        feature_module="fc1", feature_radius=0.1, grid=GRID,
                                        progress=False)
    assert not empirical.certifiable and empirical.info["certified"] is False
    with pytest.raises(CertificateUnavailableError):
        empirical.certified_radius(x_test[:5], y_test[:5])
    report = evaluate(empirical, (x_test, y_test), (0.0, 0.02), pgd_steps=10, progress=False)
    assert report.records[0]["certified"] is None and report.records[0]["clean"] > 0.8
    # a bound the user vouches for (here: the exact norm of the linear body) certifies
    weight = net.body[0].weight.detach().reshape(2, -1).double()
    bound = float(torch.linalg.matrix_norm(weight, 2))  # patchify conv: disjoint patches
    certified = retrain_last_two_layers(net, (x, y), head="polynomial", threat=cr.L2(0.05),
                                        feature_module="fc1", lipschitz=bound, grid=GRID,
                                        solver="torch", progress=False)
    assert certified.certifiable
    # each torch solve says how far from its program's optimum it can be (a certified gap)
    gaps = [c["duality_gap"] for c in certified.info["candidates"]]
    assert all(g is not None and 0.0 <= g < math.inf for g in gaps)
    report = evaluate(certified, (x_test, y_test), (0.0, 0.05), progress=False, pgd_steps=20)
    assert report.violations == [0, 0]
    certified.save(tmp_path / "custom.pt")  # an arbitrary module is pickled ...
    with pytest.raises(InvalidInputError, match="trust_pickle"):
        RobustModel.load(tmp_path / "custom.pt")
    loaded = RobustModel.load(tmp_path / "custom.pt", trust_pickle=True)  # ... on request
    with torch.no_grad():
        assert torch.equal(loaded(x_test), certified(x_test))


def test_bad_input_is_rejected(liresnet, data):
    x, y, _, _ = data
    kw = {"threat": cr.L2(0.05), "grid": GRID, "progress": False}
    with pytest.raises(InvalidInputError, match="fc3"):
        retrain_last_two_layers(_Custom(), (x, y), feature_module="fc3", feature_radius=0.1,
                                **kw)
    with pytest.raises(InvalidInputError, match="no guaranteed Lipschitz bound"):
        retrain_last_two_layers(_Custom(), (x, y), feature_module="fc1", **kw)
    with pytest.raises(InvalidInputError):
        retrain_last_two_layers(liresnet, (x, y[:-3]), **kw)
    with pytest.raises(InvalidInputError):
        retrain_last_two_layers(liresnet, (x, y), head="cubic", **kw)
    with pytest.raises(InvalidInputError):
        retrain_last_two_layers(liresnet, (x, y), threat=0.05, progress=False)
    with pytest.raises(InvalidInputError, match="feature_radius"):
        retrain_last_two_layers(liresnet, (x, y), feature_radius=0.2, **kw)
    with pytest.raises(InvalidInputError):
        retrain_last_two_layers(liresnet, (x, y), validation=1.5, **kw)
    with pytest.raises(InvalidInputError):
        retrain_last_two_layers(liresnet, (x, y), **{**kw, "grid": {"gamma": (1,)}})
    bad = x.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(InvalidInputError):
        retrain_last_two_layers(liresnet, (bad, y), **kw)


def test_pgd_trained_baseline_shares_the_feature_map(liresnet, data):
    x, y, x_test, y_test = data
    convex = retrain_last_two_layers(liresnet, (x, y), head="relu", threat=cr.L2(0.05),
                                     grid=GRID, components=4, progress=False)
    assert convex.projection.shape == (4, 8) and convex.info["components"] == 4
    baseline = pgd_trained_head(convex, (x, y), epochs=5, progress=False)
    assert baseline.head.n_neurons == convex.head.n_neurons
    assert torch.equal(baseline.projection, convex.projection) and baseline.certifiable
    assert baseline.info["chosen"]["lr"] in (1e-3, 3e-3, 1e-2)
    report = evaluate(baseline, (x_test, y_test), (0.0, 0.05), pgd_steps=20, progress=False)
    assert report.violations == [0, 0] and report.records[0]["clean"] > 0.8


def test_solver_choice_is_solve_s_and_torch_defaults_apply_to_torch_only(data, monkeypatch):
    """The pipeline hands every program to solve() with the caller's solver and options, and
    TORCH_OPTIONS (below explicit options) as torch's own; the l-inf program option is the
    pipeline's documented default, whatever the solver."""
    import convexrobust.kept_solve as kept_solve
    import convexrobust.pipeline as pipeline
    from convexrobust.errors import SolverFailedError

    calls = []

    def fake_solve(program, solver, **kwargs):
        calls.append((program, solver, kwargs))
        raise SolverFailedError("stalled", status="stalled", solver=solver)

    monkeypatch.setattr(kept_solve, "solve", fake_solve)
    x, y, _, _ = data
    with pytest.raises(SolverFailedError, match="every candidate"):
        retrain_last_two_layers(_Custom().eval(), (x, y), head="polynomial",
                                threat=cr.Linf(0.02), feature_module="fc1",
                                feature_radius=0.1, grid={"beta": (1e-2,), "radius_scale": (1,)},
                                solver="scs", solver_options={"tol": 1e-5}, progress=False)
    (program, solver, kwargs), = calls
    assert solver == "scs" and kwargs["tol"] == 1e-5
    torch_options = kwargs["backend_options"]["torch"]
    assert callable(torch_options.pop("checkpoint"))  # kept_solve's: a stopped solve's state
    assert torch_options == {"accept_inaccurate": True, "checkpoint_every": math.inf}
    assert program.linf == "containment" == pipeline.PROGRAM_DEFAULTS["polynomial"]["linf"]


def test_a_stopped_grid_search_resumes_without_solving_finished_candidates(liresnet, data,
                                                                            tmp_path,
                                                                            monkeypatch):
    import convexrobust.kept_solve as kept_solve

    real_solve, calls = kept_solve.solve, []

    def counting(program, solver, **kwargs):
        calls.append(program.beta)
        if len(calls) == 2 and stop:
            raise KeyboardInterrupt  # the run is stopped while solving its second candidate
        return real_solve(program, solver, **kwargs)

    monkeypatch.setattr(kept_solve, "solve", counting)
    x, y, x_test, _ = data
    grid = {"beta": (1e-3, 1e-2), "radius_scale": (1.0,), "n_patterns": (12,)}

    def fit(**options):
        return retrain_last_two_layers(liresnet, (x, y), head="relu", threat=cr.L2(0.05),
                                       grid=grid, progress=False, cache=tmp_path, **options)

    stop = True
    with pytest.raises(KeyboardInterrupt):
        fit()
    assert calls == [1e-3, 1e-2]
    stop, calls[:] = False, []
    resumed = fit(resume=True)
    assert calls == [1e-2]  # the first candidate was kept, the second is solved now
    first, second = resumed.info["candidates"]
    assert first["resumed"] and "resumed" not in second
    calls.clear()
    again = fit(resume=True)
    assert calls == []
    with torch.no_grad():
        assert torch.equal(again(x_test), resumed(x_test))
    assert again.info["chosen"] == resumed.info["chosen"]
    # without resume, or when the data change, candidates are solved
    fit()
    assert calls == [1e-3, 1e-2]
    calls.clear()
    retrain_last_two_layers(liresnet, (x[:-30], y[:-30]), head="relu", threat=cr.L2(0.05),
                            grid=grid, progress=False, cache=tmp_path, resume=True)
    assert calls == [1e-3, 1e-2]
    with pytest.raises(InvalidInputError, match="cache"):
        retrain_last_two_layers(liresnet, (x, y), head="relu", threat=cr.L2(0.05), grid=grid,
                                progress=False, resume=True)
