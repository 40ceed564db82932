"""Counting the object-store requests that were retried during a run, and saying so in one line.

Both clients behind a ``gs://`` run directory retry 408, 429 and 5xx answers and dropped
connections on their own, with exponential backoff, and neither tells the user:

* gcsfs (metrics, ``config.json``, the lock, orbax's small metadata files through ``etils.epath``):
  up to 6 tries per request, sleeping 1-2, 2-3, 4-5, 8-9, 16-17 s between them
  (``gcsfs.retry.retry_request``), each retry logged at DEBUG on the ``gcsfs`` logger
  (``_request retrying after exception: <message>, 503``). aiohttp also resends an idempotent
  request at once, without a log record, when a reused keep-alive connection was closed.
* tensorstore (orbax's array files): up to 32 tries (the ``gcs_request_retries`` context
  resource: ``max_retries`` 32, ``initial_delay`` 1 s, ``max_delay`` 32 s), silently; it counts
  them in its ``/tensorstore/kvstore/gcs/retries`` metric.

``count_retries(run_dir)`` counts both while a run is in its block and prints, when there were
any, ``storage: 12 requests retried (gcsfs: 4 x 429, 5 x 503, 1 x connection; tensorstore: 2)
...`` to stderr as the block ends. The count is what the user waited for: each gcsfs retry slept
one backoff interval (aiohttp's immediate resends are not counted).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections import Counter

_GCSFS_RETRY = re.compile(r"retrying after exception: (.*?)(?:, (\d{3}))?$", re.S)


class _RetryFilter(logging.Filter):
    """On the ``gcsfs`` logger while its level is lowered to DEBUG: counts gcsfs's "retrying
    after exception" records by cause (the HTTP status, else ``connection``) and lets through only
    the records the logger passed at its former level ``floor``, so nothing new is shown."""

    def __init__(self, floor: int):
        super().__init__()
        self.floor, self.counts = floor, Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.DEBUG:
            m = _GCSFS_RETRY.search(str(record.msg))
            if m:
                self.counts[m.group(2) or "connection"] += 1
        return record.levelno >= self.floor


def tensorstore_retries() -> int:
    """tensorstore's count of retried GCS requests in this process (0 without tensorstore)."""
    try:
        import tensorstore as ts

        metrics = ts.experimental_collect_matching_metrics("/tensorstore/kvstore/gcs/retries")
        return sum(int(v.get("value", 0)) for m in metrics for v in m.get("values", []))
    except Exception:  # not installed, or a version without this metric
        return 0


@contextlib.contextmanager
def count_retries(path, report: bool = True, out=None):
    """Counts the requests gcsfs and tensorstore retried while the block runs and, when ``report``
    and there were any, prints ``retry_line`` to ``out`` (default stderr) as it ends, also when it
    raises. Yields a dict holding, at the end, ``{"gcsfs": Counter(cause -> n), "tensorstore": n,
    "total": n}``. A no-op for local paths."""
    result: dict = {"gcsfs": Counter(), "tensorstore": 0, "total": 0}
    if "://" not in str(path):
        yield result
        return
    try:
        import gcsfs  # noqa: F401  (creates its child loggers, pinned below)
    except ImportError:
        pass
    logger = logging.getLogger("gcsfs")
    floor = logger.getEffectiveLevel()
    # gcsfs's child loggers (gcsfs.credentials: a traceback per failed credential method) would
    # inherit DEBUG and reach the root's handlers: they keep the former level.
    for name in ("gcsfs.credentials", "gcsfs.zonal_file"):
        logging.getLogger(name)
    children = [lg for name, lg in list(logging.root.manager.loggerDict.items())
                if name.startswith("gcsfs.") and isinstance(lg, logging.Logger) and lg.level == logging.NOTSET]
    for child in children:
        child.setLevel(floor)
    old_level, flt = logger.level, _RetryFilter(floor)
    logger.addFilter(flt)
    logger.setLevel(logging.DEBUG)
    ts_before = tensorstore_retries()
    try:
        yield result
    finally:
        logger.setLevel(old_level)
        logger.removeFilter(flt)
        for child in children:
            child.setLevel(logging.NOTSET)
        result["gcsfs"] = flt.counts
        result["tensorstore"] = tensorstore_retries() - ts_before
        result["total"] = sum(flt.counts.values()) + result["tensorstore"]
        if report and result["total"]:
            print(retry_line(result), file=out or sys.stderr, flush=True)


def retry_line(counts: dict) -> str:
    """``storage: N requests retried (gcsfs: ...; tensorstore: M) ...`` for ``count_retries``'s dict."""
    parts = []
    if counts["gcsfs"]:
        parts.append("gcsfs: " + ", ".join(f"{n} x {why}" for why, n in sorted(counts["gcsfs"].items())))
    if counts["tensorstore"]:
        parts.append(f"tensorstore: {counts['tensorstore']}")
    n = counts["total"]
    return (f"storage: {n} request{'s' if n != 1 else ''} retried ({'; '.join(parts)}): the object store "
            "answered 429/5xx or dropped the connection, and the retry went through unless an error follows")
