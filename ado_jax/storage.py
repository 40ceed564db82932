"""A run's small files on local disk or in an object store, each written the way its medium makes atomic.

A local file is replaced by a temporary sibling and ``os.replace``: a reader sees the old bytes or
the new, never half. An object store (``gs://`` and any other ``scheme://`` that fsspec opens)
has no rename (gcsfs turns one into a copy and a delete), but a single upload is already atomic,
so objects are written in place:

* ``write_text`` / ``write_bytes``: one upload (local: temporary file + ``os.replace``).
* ``append_text`` / ``append_bytes``: local: an append. ``gs://``: the new bytes go up as a small part object that
  is *composed* onto the end of the object server-side and then deleted, so each append costs
  O(new bytes), not a rewrite of the whole file (``metrics.jsonl`` over a 60,000-step run).
* ``create_exclusive`` / ``delete_if_generation``: a create-if-absent (``ifGenerationMatch=0``)
  and a delete by the holder of one generation: the run-directory lock.

gcsfs retries 429/5xx answers and dropped connections with exponential backoff on its own. An
upload into a bucket that does not exist, or that the credentials may not write, raises
``FileNotFoundError`` / ``PermissionError`` with one line naming the bucket and what to do (gcsfs
would name only the API's URL).
With ``STORAGE_EMULATOR_HOST`` set (a GCS API server on localhost, as in the tests), gcsfs's
experimental zonal-bucket probe (a gRPC call the emulators do not answer, 60 s a bucket) is
turned off unless ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is set.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid

if os.environ.get("STORAGE_EMULATOR_HOST"):  # before gcsfs is imported: it reads this once
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def is_object_store(path) -> bool:
    """True for ``scheme://`` paths (``gs://bucket/run``), False for local paths."""
    return "://" in str(path)


def filesystem(path):
    """``(fsspec filesystem, path within it)`` for an object-store ``path``, listing cache off
    (another process may have written since: a lock or a resume must see the store as it is)."""
    import fsspec

    fs, inner = fsspec.core.url_to_fs(str(path), use_listings_cache=False, skip_instance_cache=False)
    return fs, inner


def _bucket(path) -> str:
    """``scheme://bucket`` of an object-store path."""
    scheme, rest = str(path).split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


@contextlib.contextmanager
def _upload_errors(path):
    """Turns gcsfs's bare errors of an upload to ``path`` into one line naming its bucket and what
    to do: a missing bucket (a 404 naming only the API's URL) and a refused write
    (``OSError("Forbidden: <url>...")``)."""
    try:
        yield
    except FileExistsError:
        raise
    except FileNotFoundError:
        bucket = _bucket(path)
        raise FileNotFoundError(f"{bucket} does not exist (writing {path}): create it (gcloud storage buckets "
                                f"create {bucket}) or fix the path") from None
    except OSError as e:
        if not str(e).startswith("Forbidden"):
            raise
        raise PermissionError(errno.EACCES, f"permission denied (HTTP 403) by {_bucket(path)}: check the "
                              "credentials (gcloud auth list shows who they are) and grant them "
                              "roles/storage.objectAdmin on it", str(path)) from None


def _put(fs, inner: str, data: bytes, path, **kwargs) -> None:
    """``fs.pipe_file(inner, data, **kwargs)`` with ``_upload_errors(path)``."""
    with _upload_errors(path):
        fs.pipe_file(inner, data, **kwargs)


def upload_file(local: str, path) -> None:
    """Copies the local file ``local`` to ``path`` (an object store: one streamed, resumable upload
    for large files; local: ``shutil.copyfile``)."""
    if not is_object_store(path):
        shutil.copyfile(local, path)
        return
    fs, inner = filesystem(path)
    with _upload_errors(path):
        fs.put_file(local, inner)


def list_files(path) -> list[str]:
    """Every file (object) under the folder ``path``, as full paths (``gs://bucket/...`` for an
    object store); ``[]`` when it does not exist."""
    if not is_object_store(path):
        return [os.path.join(root, f) for root, _, files in os.walk(path) for f in files]
    fs, inner = filesystem(path)
    scheme = str(path).split("://", 1)[0]
    try:
        found = fs.find(inner.rstrip("/"))
    except FileNotFoundError:  # gcsfs: the bucket itself is missing
        bucket = _bucket(path)
        raise FileNotFoundError(f"{bucket} does not exist (listing {path}): create it (gcloud storage buckets "
                                f"create {bucket}) or fix the path") from None
    return [f"{scheme}://{p}" for p in found]


def publish_dir(local: str, out, last: str) -> None:
    """Uploads every file of the local folder ``local`` into the object-store folder ``out``, the
    file named ``last`` after all the others, so a reader that opens ``last`` first (an HF
    checkpoint's ``config.json``) never sees a half-written folder. Files already in ``out`` are
    deleted first, ``last`` before the rest: a failed upload leaves no ``last``, never a mix of
    two versions."""
    out = str(out).rstrip("/")
    old = list_files(out)
    for path in sorted(old, key=lambda p: p != f"{out}/{last}"):
        remove(path)
    names = sorted((os.path.relpath(os.path.join(root, f), local) for root, _, files in os.walk(local)
                    for f in files), key=lambda n: n == last)
    for name in names:
        upload_file(os.path.join(local, name), f"{out}/{name}")


def remove(path) -> None:
    """Deletes the file or object ``path`` (nothing when it is absent)."""
    try:
        if is_object_store(path):
            fs, inner = filesystem(path)
            fs.rm_file(inner)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def write_bytes(path, data: bytes) -> None:
    """Replaces the file at ``path`` with ``data``, atomically: local by a temporary sibling and
    ``os.replace``, in an object store by one upload."""
    if is_object_store(path):
        fs, inner = filesystem(path)
        _put(fs, inner, data, path)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_text(path, text: str) -> None:
    """Replaces the file at ``path`` with ``text``, atomically: local by a temporary sibling and
    ``os.replace``, in an object store by one upload."""
    write_bytes(path, text.encode())


def read_text(path) -> str | None:
    """The text at ``path``, or None when there is no such file or object."""
    try:
        if is_object_store(path):
            fs, inner = filesystem(path)
            return fs.cat_file(inner).decode()
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_json(path, label: str):
    """The JSON value at ``path`` (local or object store); ValueError starting with ``label``
    (e.g. ``"--mixtures PATH"``) when there is no such file or it is not JSON."""
    import json

    text = read_text(path)
    if text is None:
        raise ValueError(f"{label}: no such file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{label}: not JSON ({e})") from None


def append_text(path, text: str, exists: bool | None = None) -> None:
    """Appends ``text`` to the file at ``path`` (created when absent), uploading only ``text``
    (``append_bytes``)."""
    append_bytes(path, text.encode(), exists)


def append_bytes(path, data: bytes, exists: bool | None = None) -> None:
    """Appends ``data`` to the file at ``path`` (created when absent), uploading only ``data``.

    Local: an ``open(..., "ab")`` write. ``gs://``: a part object composed onto the end of ``path``
    and deleted (a crash between the compose and the delete leaves a part named
    ``<name>.part-*`` that ``remove_parts`` clears): three requests whatever the object's size.
    ``exists``: whether the caller knows the object exists (True: the append is those three
    requests; None: it is looked up first, which gcsfs does in two or three more). Other object
    stores, which have no compose, rewrite the whole object."""
    if not data:
        return
    if not is_object_store(path):
        with open(path, "ab") as f:
            f.write(data)
        return
    fs, inner = filesystem(path)
    if exists is None:
        exists = fs.exists(inner)
    if not exists:
        _put(fs, inner, data, path)
        return
    if not hasattr(fs, "merge"):
        _put(fs, inner, fs.cat_file(inner) + data, path)
        return
    part = f"{inner}.part-{uuid.uuid4().hex[:12]}"
    _put(fs, part, data, path)
    try:
        fs.merge(inner, [inner, part])
    finally:
        fs.rm_file(part)


def remove_parts(path) -> int:
    """Deletes the ``<path>.part-*`` objects a crash left between an append's compose and delete;
    returns how many. A no-op (0) for local paths."""
    if not is_object_store(path):
        return 0
    fs, inner = filesystem(path)
    parts = fs.glob(f"{inner}.part-*")
    for part in parts:
        fs.rm_file(part)
    return len(parts)


def create_exclusive(path, text: str):
    """Creates the object ``path`` holding ``text`` only if no object of that name exists
    (``ifGenerationMatch=0``: two processes racing, exactly one wins); returns its generation.

    Raises ``FileExistsError`` when the object exists. Local paths: ``O_CREAT | O_EXCL``
    (generation ``None``)."""
    if not is_object_store(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return None
    fs, inner = filesystem(path)
    _put(fs, inner, text.encode(), path, mode="create")
    return generation(path)


def generation(path):
    """The object's generation (a string; ``None`` when absent, or for a local path)."""
    if not is_object_store(path):
        return None
    fs, inner = filesystem(path)
    try:
        info = fs.info(inner)
    except FileNotFoundError:
        return None
    gen = info.get("generation")
    return None if gen is None else str(gen)


def delete_if_generation(path, gen) -> bool:
    """Deletes the object ``path`` if its generation is still ``gen`` (the caller's own write);
    returns False, deleting nothing, when it is gone or another writer replaced it.

    On GCS the delete carries ``ifGenerationMatch``, so a replacement between the check and the
    delete is not deleted either."""
    if not is_object_store(path):
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
    if gen is None or generation(path) != str(gen):
        return False
    fs, inner = filesystem(path)
    if str(path).startswith("gs://"):
        bucket, key = inner.split("/", 1)
        try:
            fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=str(gen))
        except (FileNotFoundError, OSError):
            return False
    else:
        fs.rm_file(inner)
    return True
