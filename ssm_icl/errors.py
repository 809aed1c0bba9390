"""User-facing errors: a mistake in what the user asked for, not a bug.

The command-line programs (`ssm_icl.main`, `ssm_icl.eval`,
`ssm_icl.reproduce`) print a `UserError` as one `error: ...` line and exit
non-zero, without a Python traceback; any other exception is a bug in
`ssm_icl` and keeps its traceback. Raise it (or a subclass) with a message
that names the bad value and what was expected, e.g.
`UserError("--workdir='s3://x': unsupported scheme 's3'; expected a local "
"path or gs://bucket/path")`.

It subclasses `ValueError` so library callers that already catch
`ValueError` for bad arguments keep working.
"""


class UserError(ValueError):
  """A bad input from the user (config value, flag, workdir, checkpoint)."""


class UserTypeError(UserError, TypeError):
  """A user-supplied value of the wrong type (e.g. a string for an int).

  Also a `TypeError`, so callers catching either keep working.
  """
