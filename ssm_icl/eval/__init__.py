"""ssm_icl.eval: ICL curves with bootstrap intervals, plots and Table 1.

`evaluate(predictors, task, n_points=...)` runs models (`model_predictor`)
and baselines on the same fixed prompts and returns JSON-ready curves;
`plot_curves` / `plot_grid` draw them; `write_table` computes the paper's
Table 1 from stored results with its criterion stated in the output.
"""

from ssm_icl.eval.icl_curves import evaluate
from ssm_icl.eval.icl_curves import load_results
from ssm_icl.eval.icl_curves import model_predictor
from ssm_icl.eval.icl_curves import save_results
from ssm_icl.eval.icl_curves import validate_results
from ssm_icl.eval.plots import plot_curves
from ssm_icl.eval.plots import plot_grid
from ssm_icl.eval.report import build_table
from ssm_icl.eval.report import Criterion
from ssm_icl.eval.report import group_by_task
from ssm_icl.eval.report import render_markdown
from ssm_icl.eval.report import summary_error
from ssm_icl.eval.report import write_table

__all__ = [
    "Criterion",
    "build_table",
    "evaluate",
    "group_by_task",
    "load_results",
    "model_predictor",
    "plot_curves",
    "plot_grid",
    "render_markdown",
    "save_results",
    "summary_error",
    "validate_results",
    "write_table",
]
