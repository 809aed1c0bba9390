"""Workdir paths: local directories and object stores (gs://) alike.

Every file the CLIs write under a `--workdir` goes through `etils.epath`, so
the same code writes to a local disk or to a Google Cloud Storage bucket
(epath's gs:// backend is gcsfs; Orbax's array storage is tensorstore's GCS
driver). A workdir becomes an `epath.Path` once, in `workdir_path`, when it
enters the program: gs:// URLs stay as they are, local paths are made
absolute (Orbax needs that).

Object stores differ from a file system in three ways that matter here:
* there is no rename: an object is written whole (an upload becomes visible
  only when complete, so a single write is already atomic), and a rename is a
  copy plus a delete;
* there is no append: appending rewrites the whole object;
* directories do not exist, and gcsfs *creates the bucket* when asked to make
  a directory in a missing one, so `ensure_dir` does nothing there.
Hence `write_text` (tmp file + rename locally, one upload on GCS),
`create_text` (a marker written only if absent: a precondition
`ifGenerationMatch=0` on GCS) and `append_text`.
"""

from __future__ import annotations

import os
import re
import uuid

from etils import epath

from ssm_icl.errors import UserError

PathLike = str | os.PathLike
# URL schemes a workdir may use; anything else with "://" is refused rather
# than being taken for a relative local path ("s3:/x").
OBJECT_STORE_SCHEMES = ("gs",)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_object_store(path: PathLike) -> bool:
  """True for gs:// (and other URL) paths, False for local ones."""
  return bool(_SCHEME.match(os.fspath(path)))


def workdir_path(workdir: PathLike, *, name: str = "workdir") -> epath.Path:
  """The workdir as an `epath.Path`; raises UserError for a bad one.

  Args:
    workdir: a local path or gs://bucket/path (str or path object).
    name: what to call it in error messages (e.g. "--workdir").

  Returns:
    gs:// paths unchanged; local paths absolute (`~` expanded).

  Raises:
    UserError: empty path, unsupported scheme, or a URL without a bucket.
  """
  text = os.fspath(workdir)
  if not text:
    raise UserError(f"{name} is empty; expected a local path or "
                    "gs://bucket/path.")
  match = _SCHEME.match(text)
  if not match:
    return epath.Path(text).expanduser().absolute()
  scheme = match.group(1)
  if scheme not in OBJECT_STORE_SCHEMES:
    raise UserError(f"{name}={text!r}: unsupported scheme {scheme!r}; "
                    "expected a local path or gs://bucket/path.")
  if not bucket_of(text):
    raise UserError(f"{name}={text!r} names no bucket; expected "
                    "gs://bucket/path.")
  _uncached_listings()
  return epath.Path(text)


def _uncached_listings() -> None:
  """Makes gcsfs list objects afresh each time (unless configured).

  gcsfs caches directory listings for the life of the process, and then
  answers `exists` from them: objects written later by another host or
  process (checkpoint shards, a finished step) would stay invisible. Takes
  effect for GCS file systems created after this call, i.e. before the
  first gs:// access when a workdir enters the program here.
  """
  import fsspec.config  # pylint: disable=g-import-not-at-top
  fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache",
                                                      False)


def bucket_of(path: PathLike) -> str:
  """'gs://bkt/run/x' -> 'bkt' ('' for local paths)."""
  match = _SCHEME.match(os.fspath(path))
  if not match:
    return ""
  return os.fspath(path)[match.end():].split("/")[0]


def check_writable(workdir: PathLike, *, name: str = "workdir"
                   ) -> epath.Path:
  """Creates `workdir` if needed and writes a probe file there.

  Every process of a multi-host run may call it (probe names are unique).

  Returns:
    `workdir_path(workdir)`.

  Raises:
    UserError: naming the workdir, when it cannot be used: unsupported
      scheme, missing bucket, no permission, no GCS client installed.
  """
  path = workdir_path(workdir, name=name)
  probe = path / f".write_check-{uuid.uuid4().hex}"
  try:
    # No bucket check of its own: reading bucket metadata needs a permission
    # (storage.buckets.get) that a writer may lack; an upload into a missing
    # bucket fails with FileNotFoundError.
    ensure_dir(path)
    probe.write_text("")
    probe.unlink()
  except ImportError as e:  # gcsfs missing
    raise UserError(
        f"{name}={str(path)!r} needs the GCS client ({e}); install it with "
        "`pip install gcsfs` (it comes with ssm_icl's `tpu` and `gpu` "
        "extras).") from None
  except Exception as e:  # pylint: disable=broad-exception-caught
    # OSError locally; gcsfs raises OSError subclasses or its HttpError for
    # refused requests, aiohttp errors for unreachable endpoints.
    reason = f"{type(e).__name__}: {e}"
    if is_object_store(path) and isinstance(e, FileNotFoundError):
      reason = (f"FileNotFoundError: bucket 'gs://{bucket_of(path)}' does "
                "not exist")
    raise UserError(f"{name}={str(path)!r} is not writable ({reason}); "
                    "pass a --workdir you can write to.") from None
  return path


def ensure_dir(path: PathLike) -> None:
  """Creates a local directory (and parents); nothing on object stores."""
  if not is_object_store(path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def write_text(path: PathLike, text: str) -> None:
  """Writes `text` atomically: a kill never leaves a half-written file.

  Locally a temporary file is renamed over `path`; on an object store the
  single upload is atomic by itself. Parent directories are created.
  """
  path = epath.Path(path)
  ensure_dir(path.parent)
  if is_object_store(path):
    path.write_text(text)
    return
  tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
  tmp.write_text(text)
  tmp.replace(path)


def create_text(path: PathLike, text: str) -> bool:
  """Writes `text` to `path` only if it does not exist yet (a marker).

  Returns:
    True if this call created the file, False if it existed.
  """
  path = epath.Path(path)
  if not is_object_store(path):
    # One writer per run directory: a check, then the atomic write.
    if path.exists():
      return False
    write_text(path, text)
    return True
  # pylint: disable=g-import-not-at-top
  import fsspec
  # pylint: enable=g-import-not-at-top
  fs, key = fsspec.core.url_to_fs(os.fspath(path))
  try:
    fs.pipe_file(key, text.encode("utf-8"), mode="create")
  except FileExistsError:  # the precondition ifGenerationMatch=0 failed
    return False
  return True


def append_text(path: PathLike, text: str) -> None:
  """Appends `text` to `path` (created if absent).

  Objects cannot be appended to, so on an object store the whole object is
  rewritten: use it for small, rarely appended files.
  """
  path = epath.Path(path)
  if not is_object_store(path):
    ensure_dir(path.parent)
    with path.open("a") as f:
      f.write(text)
    return
  old = path.read_text() if path.exists() else ""
  path.write_text(old + text)
