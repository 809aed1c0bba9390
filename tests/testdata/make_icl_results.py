"""Regenerates the small stored ICL results used by the eval tests.

Run from the repository root: `python tests/testdata/make_icl_results.py`.
The "models" are stand-ins (baselines wrapped as plain callables, so they are
recorded with kind "model"), chosen so that Table 1 shows every mark: on
sparse parity the stand-in "transformer" is a random guesser.
"""

import os

from ssm_icl import baselines
from ssm_icl import eval as icl_eval
from ssm_icl import tasks

_OUT = os.path.dirname(os.path.abspath(__file__))


def _as_model(baseline):
  return lambda prompt: baseline(prompt)


def main():
  specs = [
      (tasks.get_task("linear_regression", n_dims=5), 11, {
          "transformer": baselines.LeastSquares(),
          "mamba": baselines.Ridge(alpha=2.0),
          "mambaformer": baselines.LeastSquares(),
      }, ["zero", "least_squares", "3-nn", "averaging"]),
      (tasks.get_task("decision_tree", n_dims=3), 41, {
          "transformer": baselines.DecisionTree(max_depth=4),
          "mamba": baselines.KNearestNeighbors(n_neighbors=3),
          "mambaformer": baselines.DecisionTree(max_depth=None),
      }, ["zero", "least_squares"]),
      (tasks.get_task("sparse_parity", n_dims=5, k=2), 16, {
          "transformer": baselines.RandomSign(seed=1),
          "mamba": baselines.ParityBayes(k=2),
          "mambaformer": baselines.ParityBayes(k=2, rule="first"),
      }, ["chance", "bayes_optimal"]),
  ]
  for task, n_points, models, baseline_names in specs:
    relevant = baselines.relevant_baselines(task)
    predictors = {name: _as_model(b) for name, b in models.items()}
    predictors.update({name: relevant[name] for name in baseline_names})
    results = icl_eval.evaluate(predictors, task, n_points=n_points,
                                n_prompts=64, batch_size=32, seed=0,
                                n_bootstrap=200, progress=False)
    results["note"] = ("test data: the model curves are baselines standing "
                       "in for trained models")
    path = os.path.join(_OUT, f"icl_results_{task.name}.json")
    icl_eval.save_results(results, path)
    print("wrote", path)


if __name__ == "__main__":
  main()
