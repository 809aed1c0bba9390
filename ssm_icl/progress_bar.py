"""tqdm progress bars that stay readable when the output is a log file.

On a terminal a tqdm bar redraws itself in place with carriage returns. A
pod's or a batch job's output is a file, where each redraw becomes another
`\\r`-separated fragment of one huge line. `progress_bar` returns a normal
bar on a terminal; otherwise a bar that writes one plain ASCII line per
update, at most every `LOG_INTERVAL_S` seconds, and keeps its last line.
Every progress bar of `ssm_icl` is made here.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import tqdm

# Seconds between two lines of a bar written to a file (not a terminal).
LOG_INTERVAL_S = 30.0


def is_terminal(stream: Any) -> bool:
  """Whether `stream` is an interactive terminal."""
  isatty = getattr(stream, "isatty", None)
  try:
    return bool(isatty and isatty())
  except ValueError:  # a closed file
    return False


class LineWriter:
  """A file-like wrapper that turns tqdm's in-place redraws into lines.

  tqdm writes `\\r<status><padding>` per refresh (and blanks to erase);
  each non-blank status becomes one `<status>\\n` line.
  """

  def __init__(self, stream: TextIO):
    self.stream = stream

  def write(self, text: str) -> None:
    for part in text.replace("\n", "\r").split("\r"):
      part = part.strip()
      if part:
        self.stream.write(part + "\n")

  def flush(self) -> None:
    self.stream.flush()


class _LogBar(tqdm.tqdm):
  """The bar written to a file: setting a postfix or description waits for
  the next timed refresh (tqdm's default redraws at once, which would write
  a line per call and bypass `mininterval`)."""

  def set_postfix_str(self, s: str = "", refresh: bool = False) -> None:
    super().set_postfix_str(s, refresh=refresh)

  def set_postfix(self, ordered_dict=None, refresh: bool = False,
                  **kwargs: Any) -> None:
    super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

  def set_description(self, desc: str | None = None,
                      refresh: bool = False) -> None:
    super().set_description(desc, refresh=refresh)


def progress_bar(total: int, desc: str, *, enabled: bool = True,
                 stream: TextIO | None = None, **kwargs: Any) -> tqdm.tqdm:
  """A tqdm bar over `total` units: in place on a terminal, else lines.

  Args:
    total: number of updates expected.
    desc: the bar's label.
    enabled: False returns a disabled bar (its methods do nothing).
    stream: where to write (default: sys.stderr, looked up at call time).
    **kwargs: more tqdm arguments (e.g. `leave`, `mininterval`); on a file
      `leave` is forced to True, so the log keeps the final count.
  """
  stream = sys.stderr if stream is None else stream
  if is_terminal(stream):
    return tqdm.tqdm(total=total, desc=desc, disable=not enabled,
                     file=stream, **kwargs)
  kwargs.setdefault("mininterval", LOG_INTERVAL_S)
  kwargs["leave"] = True
  return _LogBar(total=total, desc=desc, disable=not enabled,
                 file=LineWriter(stream), ascii=True, dynamic_ncols=False,
                 ncols=100, **kwargs)
