"""Make a pretrained network robust: replace its last two layers by a convex robust head.

Two routes: a LiResNet (its guaranteed Lipschitz bound makes the result certified) and any
nn.Module, naming the layer whose input is the feature (here "fc1"; without a bound the model is
evaluated empirically only)."""

import torch
from torch import nn

import convexrobust as cr
from convexrobust.data import digits
from convexrobust.training import TrainConfig, train_liresnet
from convexrobust.training_common import as_tensors

torch.set_num_threads(2)
split = digits()
x, y = as_tensors(split.X_train, split.y_train)
x_test, y_test = as_tensors(split.X_test, split.y_test)

# 1. a LiResNet (trained here in ~40 s; load yours with cr.LiResNet.load(path))
liresnet = train_liresnet(TrainConfig(epochs=100, neck_channels=4), x, y, "out/example-liresnet",
                          progress=False)
robust = cr.retrain_last_two_layers(liresnet, (x, y), head="polynomial", threat=cr.L2(0.3),
                                    components=16, progress=False)
robust.save("out/example-liresnet/robust.pt")
for name, model in (("liresnet", liresnet), ("liresnet+polynomial", robust)):
    report = cr.evaluate(model, (x_test, y_test), (0.1, 0.3, 0.5), name=name, progress=False)
    print(report.table())


# 2. any network: say which module's input is the feature
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.body(x))))


net = Net()
optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
for _ in range(200):  # a quick (non-robust) pretraining
    optimiser.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    optimiser.step()
empirical = cr.retrain_last_two_layers(net.eval(), (x, y), head="relu", threat=cr.L2(0.3),
                                       feature_module="fc1", feature_radius=0.5,
                                       progress=False)
print(cr.evaluate(empirical, (x_test, y_test), (0.1, 0.3), name="net+relu",
                  progress=False).table())
print("certifiable:", empirical.certifiable, "(no guaranteed bound for this feature map)")
