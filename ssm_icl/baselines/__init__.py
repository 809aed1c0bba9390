"""ssm_icl.baselines: classical in-context learners on the models' prompts.

Every baseline is a callable `predict(prompt) -> preds [b, p, d_out]`
aligned with `prompt.targets`; slot j uses only the examples that precede it
(`example_index[j]`, `example_mask`) and its query input. `BASELINES` and
`get_baseline(name, **kw)` build one by name; `relevant_baselines(task)`
gives the ones plotted for a task.
"""

from ssm_icl.baselines.gd_network import GDTwoLayerNetwork
from ssm_icl.baselines.linear import Averaging
from ssm_icl.baselines.linear import BayesLinearRegression
from ssm_icl.baselines.linear import LeastSquares
from ssm_icl.baselines.linear import Ridge
from ssm_icl.baselines.neighbors import KNearestNeighbors
from ssm_icl.baselines.parity import ParityBayes
from ssm_icl.baselines.prefix import Baseline
from ssm_icl.baselines.prefix import prefix_view
from ssm_icl.baselines.prefix import PrefixView
from ssm_icl.baselines.registry import BASELINES
from ssm_icl.baselines.registry import get_baseline
from ssm_icl.baselines.registry import LASSO_ALPHAS
from ssm_icl.baselines.registry import NO_CONTEXT
from ssm_icl.baselines.registry import no_context_level
from ssm_icl.baselines.registry import relevant_baselines
from ssm_icl.baselines.sklearn_models import DecisionTree
from ssm_icl.baselines.sklearn_models import GradientBoosting
from ssm_icl.baselines.sklearn_models import Lasso
from ssm_icl.baselines.trivial import RandomSign
from ssm_icl.baselines.trivial import ZeroPredictor

__all__ = [
    "Averaging",
    "BASELINES",
    "Baseline",
    "BayesLinearRegression",
    "DecisionTree",
    "GDTwoLayerNetwork",
    "GradientBoosting",
    "KNearestNeighbors",
    "LASSO_ALPHAS",
    "Lasso",
    "LeastSquares",
    "NO_CONTEXT",
    "ParityBayes",
    "PrefixView",
    "RandomSign",
    "Ridge",
    "ZeroPredictor",
    "get_baseline",
    "no_context_level",
    "prefix_view",
    "relevant_baselines",
]
