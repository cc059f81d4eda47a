"""Certify a saved robust model point by point: the input-space radius within which no
perturbation changes the prediction (MATH.md §5: head radius / guaranteed K_h), checked against
a strong attack. Pass a RobustModel file (e.g. out/demo/liresnet+polynomial.pt from `make demo`);
without one, a small model is trained first."""

import sys
from pathlib import Path

import torch

import convexrobust as cr
from convexrobust.data import digits
from convexrobust.training import TrainConfig, train_liresnet
from convexrobust.training_common import as_tensors

torch.set_num_threads(2)
split = digits()
x, y = as_tensors(split.X_test, split.y_test)
path = Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo/liresnet+polynomial.pt")
if path.exists():
    model = cr.RobustModel.load(path)
else:
    print(f"no model at {path}: training a small LiResNet and a convex polynomial head first")
    x_train, y_train = as_tensors(split.X_train, split.y_train)
    liresnet = train_liresnet(TrainConfig(epochs=30, neck_channels=4), x_train, y_train,
                              "out/example-certify", progress=False)
    model = cr.retrain_last_two_layers(liresnet, (x_train, y_train), head="polynomial",
                                       threat=cr.L2(0.3), components=8, progress=False)

radius = model.certified_radius(x, y)  # float64, 0 where misclassified
print(f"median certified l2 radius {radius.median():.3f}; certified at 0.3: "
      f"{(radius > 0.3).double().mean():.3f}")
attacked = cr.pgd_attack(model, x, y, norm=2, eps=0.3, steps=100, restarts=3, clamp=(0, 1))
with torch.no_grad():
    broken = model.predict(attacked) != y
print(f"PGD at 0.3 breaks {int(broken.sum())} points, "
      f"{int((broken & (radius > 0.3)).sum())} of them certified (must be 0)")
