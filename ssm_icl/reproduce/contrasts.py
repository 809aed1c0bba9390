"""Seeded contrasts: is "model A beats model B on task T" robust to the seed?

A suite with `seeds` trains every run once per training seed (train.seed)
and lists its `contrasts` ({"task", "better", "worse"}). From the finished
runs' summaries (`ssm_icl.reproduce.summaries`; each with its summary error
"error" and its "convergence" verdict), `build` tabulates every seed of
every (task, model) with the across-seed spread, and judges each contrast:

  claimed      better's e < worse's e in every planned seed, and every one
               of those runs converged;
  not claimed  otherwise (the per-seed values say which seed broke it, or
               which run is missing or has not converged).

`write` stores the result as contrasts.md (a section RESULTS.md can include)
and contrasts.json.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from etils import epath
import numpy as np

from ssm_icl import paths
from ssm_icl.eval import convergence as convergence_lib

CLAIMED = "claimed"
NOT_CLAIMED = "not claimed"


def _per_seed(finished: Sequence[Mapping[str, Any]]
              ) -> dict[str, dict[str, dict[int, Mapping[str, Any]]]]:
  """{task: {family: {seed: summary}}}."""
  table: dict[str, dict[str, dict[int, Mapping[str, Any]]]] = {}
  for s in finished:
    table.setdefault(s["task"], {}).setdefault(s["family"], {})[
        int(s["seed"])] = s
  return table


def build(contrasts: Sequence[Mapping[str, str]],
          finished: Sequence[Mapping[str, Any]],
          seeds: Sequence[int]) -> dict[str, Any]:
  """Per-seed errors, spreads and the verdict of every contrast.

  Args:
    contrasts: [{"task", "better", "worse"}].
    finished: run summaries with "task", "family", "seed", "error" and
      "convergence".
    seeds: the planned seeds.

  Returns:
    {"seeds": [...], "runs": {task: {family: {"errors": {seed: e},
    "status": {seed: convergence status}, "mean", "std", "min", "max"}}},
    "contrasts": [{"task", "better", "worse", "verdict", "per_seed":
    [{"seed", "better", "worse", "holds"}], "reason"}]}.
  """
  seeds = [int(s) for s in seeds]
  table = _per_seed(finished)
  runs: dict[str, dict[str, Any]] = {}
  for task, by_family in table.items():
    for family, by_seed in by_family.items():
      errors = {s: float(r["error"]) for s, r in sorted(by_seed.items())}
      values = np.array(list(errors.values()))
      runs.setdefault(task, {})[family] = {
          "errors": errors,
          "status": {s: r["convergence"]["status"]
                     for s, r in sorted(by_seed.items())},
          "mean": float(values.mean()), "std": float(values.std()),
          "min": float(values.min()), "max": float(values.max())}
  verdicts = []
  for c in contrasts:
    task, better, worse = c["task"], c["better"], c["worse"]
    by_family = table.get(task, {})
    per_seed, reasons = [], []
    for seed in seeds:
      a = by_family.get(better, {}).get(seed)
      b = by_family.get(worse, {}).get(seed)
      if a is None or b is None:
        reasons.append(f"seed {seed} not finished")
        per_seed.append({"seed": seed, "better": None, "worse": None,
                         "holds": None})
        continue
      holds = float(a["error"]) < float(b["error"])
      per_seed.append({"seed": seed, "better": float(a["error"]),
                       "worse": float(b["error"]), "holds": holds})
      if not holds:
        reasons.append(f"fails in seed {seed}")
      for name, r in ((better, a), (worse, b)):
        status = r["convergence"]["status"]
        if status != convergence_lib.CONVERGED:
          reasons.append(f"{name} seed {seed}: {status}")
    verdicts.append({"task": task, "better": better, "worse": worse,
                     "verdict": NOT_CLAIMED if reasons else CLAIMED,
                     "per_seed": per_seed, "reason": "; ".join(reasons)})
  return {"seeds": seeds, "runs": runs, "contrasts": verdicts}


def markdown(report: Mapping[str, Any]) -> str:
  """The contrasts as a Markdown section."""
  seeds = report["seeds"]
  fmt = lambda v: "–" if v is None else f"{v:.4g}"
  lines = ["## Seeded contrasts", "",
           f"Every run trained with seeds {', '.join(map(str, seeds))} "
           "(train.seed; the same evaluation prompts). A contrast \"A beats "
           "B on T\" is claimed only if A's summary error is below B's in "
           "every seed and every one of those runs converged.", "",
           "| Task | model | " + " | ".join(f"seed {s}" for s in seeds)
           + " | mean ± std | range |",
           "|---|---|" + "---|" * len(seeds) + "---|---|"]
  for task, by_family in report["runs"].items():
    for family, r in by_family.items():
      cells = []
      for s in seeds:
        e = r["errors"].get(s)
        status = r["status"].get(s)
        note = "" if status in (None, convergence_lib.CONVERGED) else (
            f" ({status})")
        cells.append(fmt(e) + note)
      lines.append(f"| {task} | {family} | " + " | ".join(cells)
                   + f" | {r['mean']:.4g} ± {r['std']:.2g} | "
                   f"{r['min']:.4g}–{r['max']:.4g} |")
  lines += ["", "| Contrast | verdict | per seed (A vs B) |", "|---|---|---|"]
  for c in report["contrasts"]:
    per_seed = ", ".join(f"{p['seed']}: {fmt(p['better'])} vs "
                         f"{fmt(p['worse'])}" for p in c["per_seed"])
    verdict = c["verdict"] + (f" ({c['reason']})" if c["reason"] else "")
    lines.append(f"| {c['better']} beats {c['worse']} on {c['task']} | "
                 f"{verdict} | {per_seed} |")
  return "\n".join(lines) + "\n"


def write(workdir: paths.PathLike, report: Mapping[str, Any]) -> str:
  """Writes contrasts.md and contrasts.json to `workdir`; returns the text."""
  text = markdown(report)
  root = epath.Path(workdir)
  paths.write_text(root / "contrasts.md", text)
  paths.write_text(root / "contrasts.json",
                   json.dumps(report, indent=1, allow_nan=False) + "\n")
  return text
