"""Programs are data: render one as a cvxpy problem, add your own constraint, solve it."""

import cvxpy as cp

import convexrobust as cr
from convexrobust.data import breast_cancer

split = breast_cancer()
program = cr.ConvexReLU(split.X_train[:, :5], split.y_train, n_patterns=20, loss="hinge",
                        beta=1e-3, threat=cr.Linf(0.05))
problem = program.to_cvxpy()
V0 = {v.name(): v for v in problem.variables()}["V0"]
# e.g. forbid negative biases on the positive-output neurons (the bias is the last column)
extended = cp.Problem(problem.objective, problem.constraints + [V0[:, -1] >= 0])
solution = cr.solve(program, "clarabel", problem=extended)
print(solution)
print("smallest bias:", solution.values["V"][0][:, -1].min())
