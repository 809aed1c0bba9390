"""Observability: JSONL + TensorBoard metrics, the progress line, and the
parameter/sharding overview printed at start-up.

Only process 0 writes files or prints; the other processes get writers that do
nothing, so the training loop never branches on the process index itself.
TensorBoard event files come from tensorboardX, which has no TensorFlow
dependency; gs:// event files go through epath (`_ObjectRecordWriter`).

The workdir may be local or gs:// (`ssm_icl.paths`). Locally every record is
appended to metrics.jsonl at once; an object cannot be appended to, so on
GCS the records are kept in memory and the whole file is uploaded by
`flush()` (the loop flushes after each checkpoint save, so the records up to
a checkpoint are always stored with it) and at most every `flush_secs`.
"""

from __future__ import annotations

from collections.abc import Mapping
import io
import json
import math
import time
from typing import Any

from flax import linen as nn
import jax
from etils import epath
import numpy as np

from ssm_icl import paths

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
  """Appends scalar metrics to `workdir/metrics.jsonl` and TensorBoard.

  Attributes:
    path: the JSONL file (an `epath.Path`).
    enabled: False on processes other than 0 (then every method is a no-op).
  """

  def __init__(self, workdir: paths.PathLike, *, enabled: bool = True,
               tensorboard: bool = True, flush_secs: float = 60.0,
               clock=time.monotonic):
    self.path = paths.workdir_path(workdir) / METRICS_FILE
    self.enabled = enabled
    self._tb = None
    # Object stores: the file's lines, uploaded whole by `flush`.
    self._buffered = paths.is_object_store(self.path)
    self._lines = None
    self._dirty = False
    self._flush_secs = flush_secs
    self._clock = clock
    self._last_upload = clock()
    if tensorboard:
      # Imported lazily: tensorboardX pulls in protobuf (and torch, when
      # installed), which takes seconds. Every process imports it, so that
      # process 0 does not fall behind the others by that time between two
      # collectives (CPU collectives give up after 30 s).
      # pylint: disable=g-import-not-at-top
      import tensorboardX
      from tensorboardX import record_writer
      # pylint: enable=g-import-not-at-top
      record_writer.register_writer_factory("gs",
                                            _ObjectRecordWriterFactory())
      if enabled:
        self._tb = tensorboardX.SummaryWriter(
            logdir=str(self.path.parent / TENSORBOARD_DIR))

  def _stored_lines(self) -> list[str]:
    """The lines of the stored file (read once when buffered)."""
    if self._lines is None:
      text = self.path.read_text() if self.path.exists() else ""
      self._lines = text.splitlines(keepends=True)
    return self._lines

  def truncate_after(self, step: int) -> None:
    """Drops JSONL records with a step > `step` (left by a killed run).

    A resumed run replays the steps after its checkpoint; removing their old
    records keeps exactly one record per (step, metric) in the file.

    Args:
      step: the step training resumes from.
    """
    if not self.enabled or not self.path.exists():
      return
    kept = []
    for line in self._stored_lines() if self._buffered else (
        self.path.read_text().splitlines(keepends=True)):
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut short by a kill
      if record.get("step", 0) <= step:
        kept.append(line if line.endswith("\n") else line + "\n")
    if self._buffered:
      self._lines, self._dirty = kept, True
      self.flush()
    else:
      paths.write_text(self.path, "".join(kept))

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes one record: `{"step": step, **scalars}`.

    Args:
      step: the training step the values belong to.
      scalars: metric name -> Python/numpy scalar.
    """
    if not self.enabled:
      return
    values = {k: _to_python(v) for k, v in scalars.items()}
    line = json.dumps({"step": int(step), **values}) + "\n"
    if self._buffered:
      self._stored_lines().append(line)
      self._dirty = True
      if self._clock() - self._last_upload >= self._flush_secs:
        self.flush()
    else:
      paths.append_text(self.path, line)
    if self._tb is not None:
      for name, value in values.items():
        if isinstance(value, (int, float)):
          self._tb.add_scalar(name, value, int(step))

  def flush(self) -> None:
    """Stores what was written so far (uploads metrics.jsonl on GCS)."""
    if self._buffered and self._dirty:
      paths.write_text(self.path, "".join(self._stored_lines()))
      self._dirty = False
      self._last_upload = self._clock()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self.flush()
    if self._tb is not None:
      self._tb.close()
      self._tb = None


class _ObjectRecordWriter:
  """A tensorboardX event file on an object store, written through epath.

  Objects cannot be appended to, so the records are kept and each flush
  (every `flush_secs` of tensorboardX's writer, and at close) uploads the
  whole file, as tensorboardX's own gs:// writer does; this one uses the
  workdir's GCS client (gcsfs) instead of a second one, and uploads nothing
  from `__del__` at interpreter exit.
  """

  def __init__(self, path: str):
    self._path = epath.Path(path)
    self._buffer = io.BytesIO()
    self._uploaded = -1  # bytes in the stored object

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    if self._buffer.tell() != self._uploaded:
      self._path.write_bytes(self._buffer.getvalue())
      self._uploaded = self._buffer.tell()

  def close(self) -> None:
    self.flush()


class _ObjectRecordWriterFactory:
  """Registered with tensorboardX for gs:// logdirs."""

  def open(self, path: str) -> _ObjectRecordWriter:
    return _ObjectRecordWriter(path)

  def directory_check(self, path: str) -> None:
    del path  # object stores have no directories to create


def _to_python(value: Any) -> Any:
  """Converts numpy/JAX scalars to JSON-friendly Python values."""
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    value = np.asarray(value).item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf literals
  return value


def read_metrics(workdir: paths.PathLike) -> list[dict[str, Any]]:
  """The records of `workdir/metrics.jsonl`, in file order."""
  text = (paths.workdir_path(workdir) / METRICS_FILE).read_text()
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def format_duration(seconds: float) -> str:
  """1h02m, 3m05s, 42s."""
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


def _si(value: float) -> str:
  """12.3k, 4.56M."""
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:.3g}{unit}"
  return f"{value:.3g}"


class Progress:
  """Throughput and ETA over the steps since the last report.

  The first window includes compilation, so its rates are low; later windows
  measure the steady state.
  """

  def __init__(self, total_steps: int, start_step: int,
               clock=time.perf_counter):
    self._total = total_steps
    self._clock = clock
    self._last_step = start_step
    self._last_time = clock()
    self._tokens = 0

  def add_tokens(self, n_tokens: int) -> None:
    """Counts the tokens of one more step."""
    self._tokens += n_tokens

  def report(self, step: int) -> dict[str, float]:
    """Rates since the previous report; resets the window.

    Args:
      step: the number of completed steps.

    Returns:
      {"steps_per_s", "tokens_per_s", "eta_s"}.
    """
    now = self._clock()
    elapsed = max(now - self._last_time, 1e-9)
    steps_per_s = (step - self._last_step) / elapsed
    tokens_per_s = self._tokens / elapsed
    remaining = self._total - step
    eta = remaining / steps_per_s if steps_per_s > 0 else math.inf
    self._last_step, self._last_time, self._tokens = step, now, 0
    return {"steps_per_s": steps_per_s, "tokens_per_s": tokens_per_s,
            "eta_s": eta}

  def line(self, step: int, loss: float, rates: Mapping[str, float]) -> str:
    """`step 120/1000 | loss 0.1234 | 5.2 steps/s | 2.1k tok/s | ETA 2m49s`."""
    return (f"step {step}/{self._total} | loss {loss:.4g} | "
            f"{rates['steps_per_s']:.3g} steps/s | "
            f"{_si(rates['tokens_per_s'])} tok/s | "
            f"ETA {format_duration(rates['eta_s'])}")


def parameter_rows(boxed_params: Any, shardings: Any) -> list[dict[str, Any]]:
  """One row per parameter: name, shape, logical axes, spec, size.

  Args:
    boxed_params: abstract params whose leaves are `nn.LogicallyPartitioned`
      boxes (or plain arrays / ShapeDtypeStructs, which show no axes).
    shardings: the matching unboxed tree of `NamedSharding`s.

  Returns:
    The rows, in pytree order.
  """
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed_params, is_leaf=is_box)[0]
  specs = jax.tree.leaves(shardings)
  if len(leaves) != len(specs):
    raise ValueError(
        f"{len(leaves)} parameters but {len(specs)} shardings; the trees "
        "do not match.")
  rows = []
  for (path, leaf), sharding in zip(leaves, specs):
    names = tuple(leaf.names) if is_box(leaf) else ()
    value = leaf.value if is_box(leaf) else leaf
    shape = tuple(value.shape)
    rows.append({
        "name": "/".join(_key_str(k) for k in path),
        "shape": shape,
        "axes": names,
        "spec": tuple(sharding.spec),
        "size": int(np.prod(shape, dtype=np.int64)),
    })
  return rows


def _key_str(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def parameter_overview(rows: list[dict[str, Any]]) -> str:
  """A fixed-width table of `parameter_rows` with a total line."""
  header = ("name", "shape", "logical axes", "partition spec", "#params")
  body = [(r["name"], str(r["shape"]),
           "(" + ", ".join(str(a) for a in r["axes"]) + ")",
           "P(" + ", ".join(repr(s) for s in r["spec"]) + ")",
           f"{r['size']:,}") for r in rows]
  total = sum(r["size"] for r in rows)
  widths = [max(len(row[i]) for row in [header] + body)
            for i in range(len(header))]
  fmt = lambda row: " | ".join(
      c.rjust(w) if i == 4 else c.ljust(w)
      for i, (c, w) in enumerate(zip(row, widths)))
  rule = "-+-".join("-" * w for w in widths)
  lines = [fmt(header), rule] + [fmt(b) for b in body] + [rule]
  lines.append(f"Total: {total:,} parameters in {len(rows)} arrays.")
  return "\n".join(lines)
