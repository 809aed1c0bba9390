"""ssm_icl.tasks: on-device samplers of the paper's nine ICL task families.

`get_task(name, **fields)` builds a frozen task; `task.sample(key,
batch_size, n_points, n_dims_truncated)` returns a `Prompt`. `Curriculum`
schedules n_dims_truncated and n_points over training steps.
"""

from ssm_icl.tasks.base import gather_predictions
from ssm_icl.tasks.base import masked_loss
from ssm_icl.tasks.base import pointwise_metric
from ssm_icl.tasks.base import Prompt
from ssm_icl.tasks.cot import cot_autoregressive_predict
from ssm_icl.tasks.cot import cot_recurrent_predict
from ssm_icl.tasks.cot import CotIO
from ssm_icl.tasks.curriculum import Curriculum
from ssm_icl.tasks.decision_tree import DecisionTree
from ssm_icl.tasks.mqar import VectorMQAR
from ssm_icl.tasks.outliers import ManyOutlierRegression
from ssm_icl.tasks.outliers import OrthoOutlierRegression
from ssm_icl.tasks.parity import SparseParity
from ssm_icl.tasks.registry import get_task
from ssm_icl.tasks.registry import TASKS
from ssm_icl.tasks.regression import linear_regression_robustness_suite
from ssm_icl.tasks.regression import LinearRegression
from ssm_icl.tasks.regression import Relu2nnRegression
from ssm_icl.tasks.regression import SparseLinearRegression
from ssm_icl.tasks.task import Task

__all__ = [
    "CotIO",
    "Curriculum",
    "DecisionTree",
    "LinearRegression",
    "ManyOutlierRegression",
    "OrthoOutlierRegression",
    "Prompt",
    "Relu2nnRegression",
    "SparseLinearRegression",
    "SparseParity",
    "TASKS",
    "Task",
    "VectorMQAR",
    "cot_autoregressive_predict",
    "cot_recurrent_predict",
    "gather_predictions",
    "get_task",
    "linear_regression_robustness_suite",
    "masked_loss",
    "pointwise_metric",
]
