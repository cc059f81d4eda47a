"""Train a tiny LiResNet with EMMA on scikit-learn's digits and certify it with the guaranteed
Lipschitz bound (the same as `convexrobust train-liresnet` + `convexrobust certify`)."""

import torch

from convexrobust.data import digits
from convexrobust.training import TrainConfig, evaluate_gloro, train_liresnet
from convexrobust.training_common import as_tensors

torch.set_num_threads(2)
split = digits()
x, y = as_tensors(split.X_train, split.y_train)
x_test, y_test = as_tensors(split.X_test, split.y_test)
model = train_liresnet(TrainConfig(epochs=40), x, y, "out/liresnet-digits")
report = evaluate_gloro(model, x_test, y_test, (0.1, 0.3))
print(report)
