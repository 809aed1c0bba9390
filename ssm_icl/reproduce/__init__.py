"""ssm_icl.reproduce: one-command reproduction suites of the paper.

`python -m ssm_icl.reproduce --suite=mini --workdir=DIR` trains every
(task, model) run of a suite (configs/suites.py), evaluates each against the
task's baselines and writes the curves, figures and Table 1 to DIR;
rerunning the command resumes it. See `runner` for the resume rules and
`outputs` for the files written.
"""

from ssm_icl.reproduce.estimate import estimate_times
from ssm_icl.reproduce.outputs import PAPER_TABLE1
from ssm_icl.reproduce.outputs import paper_mark
from ssm_icl.reproduce.outputs import write_outputs
from ssm_icl.reproduce.plan import parse_sweep
from ssm_icl.reproduce.plan import plan_runs
from ssm_icl.reproduce.plan import Run
from ssm_icl.reproduce.plan import suite_config
from ssm_icl.reproduce.plan import training_flops
from ssm_icl.reproduce.runner import read_sessions
from ssm_icl.reproduce.runner import run_suite
from ssm_icl.reproduce.runner import SuiteResult

__all__ = [
    "PAPER_TABLE1",
    "Run",
    "SuiteResult",
    "estimate_times",
    "paper_mark",
    "parse_sweep",
    "plan_runs",
    "read_sessions",
    "run_suite",
    "suite_config",
    "training_flops",
    "write_outputs",
]
