"""Solve an l2-robust polynomial-activation program with a conic solver and with the torch
solver, compare them the way every solution is judged, and certify the recovered network."""

import numpy as np

import convexrobust as cr
from convexrobust.data import breast_cancer

split = breast_cancer()
X = split.X_train[:, :8]  # a few features keep the SDP small
program = cr.ConvexPolynomial(X, split.y_train, loss="squared", beta=1e-3, threat=cr.L2(0.3))

for solver in ("clarabel", "torch"):
    solution = cr.solve(program, solver)
    print(f"{solver:>8}: objective {solution.objective:.6f}  violation {solution.violation:.1e}"
          f"  {solution.wall_time:.1f} s")

net = solution.network()  # a torch.nn.Module
radii = cr.certified_radius(net, split.X_test[:, :8], split.y_test, norm=2)
print(f"neurons: {net.n_neurons}; test points certified at 0.3: "
      f"{radii.certified_accuracy(0.3):.3f} (exact l2 radii; median {np.median(radii.radius):.3f})")
