"""``metrics.jsonl``: one JSON object per line, written whole, read back tolerantly.

A run appends one record per logged step (``{"step": N, "loss": ..., ...}``), one per evaluation
(``"eval_loss"``) and one per event (``{"step": N, "event": ...}``: a resume, a mixer reset, a
stop). A crash or a full disk can leave a *partial last line*; readers drop it with a warning
naming the file instead of refusing the run. A partial line anywhere else is damage and an error
naming the file and line. Lines are never deleted without saying so: a resumed run drops the
lines past its checkpoint (those steps are redone) and says how many, and a run whose checkpoints
are gone moves the old file aside rather than truncating it.
"""

from __future__ import annotations

import json
import sys
import time

from etils import epath

from ado_jax import storage


def parse_lines(text: str, path) -> list[dict]:
    """The records of ``metrics.jsonl`` text; a partial last line is dropped with a warning.

    Raises ValueError naming ``path`` and the line for an unparseable line before the last or a
    record without an integer ``step``."""
    lines = text.split("\n")
    complete = text.endswith("\n") or not text
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            int(rec["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            if i == len(lines) and not complete:  # the unterminated last line: a write cut short
                print(f"warning: {path}:{i}: dropping a partial last line ({len(line)} bytes, e.g. after a crash "
                      "or a full disk)", file=sys.stderr)
                break
            raise ValueError(f"{path}:{i}: not a metrics record ({e}): {line[:80]!r}; "
                             "move the file aside to start its log afresh") from None
        out.append(rec)
    return out


def read_metrics(path) -> list[dict]:
    """Every complete record of the ``metrics.jsonl`` at ``path`` (``[]`` when it does not exist)."""
    path = epath.Path(path)
    return parse_lines(path.read_text(), path) if path.exists() else []


def is_event(rec: dict) -> bool:
    """True for event records (``{"step", "event", ...}``), which carry no metrics."""
    return "event" in rec


class MetricsLog:
    """``RUN_DIR/metrics.jsonl``, appended by one process (``enabled``) in whole lines.

    ``resume_step``: the step the run continues from. Records past it are dropped (the steps are
    about to be redone), with a message; when ``resume_step`` is 0 and the file has records, the
    checkpoints they belonged to are gone, so the file is moved aside (``metrics.jsonl.<time>``).
    ``last_matrices`` holds the last written value of every ``[D, D]`` metric, so a resumed run
    writes a matrix exactly when the uninterrupted run would have.
    """

    def __init__(self, run_dir: epath.Path, resume_step: int, enabled: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.lines: list[str] = []
        self.last_matrices: dict = {}
        self._exists = False  # whether the file exists: an append to gs:// then skips the lookup
        if not enabled:
            return
        storage.remove_parts(self.path)  # part objects a crash left inside an append (gs://)
        if not self.path.exists():
            return
        self._exists = True
        text = self.path.read_text()
        records = parse_lines(text, self.path)
        if resume_step == 0 and records:
            aside = self.path.parent / f"metrics.jsonl.{time.strftime('%Y%m%d-%H%M%S')}"
            self.path.rename(aside)
            self._exists = False
            print(f"no checkpoint to resume from: moved the {len(records)} records of {self.path} to {aside}",
                  file=sys.stderr)
            return
        kept = [r for r in records if r["step"] <= resume_step]
        if len(kept) < len(records):
            print(f"resuming from step {resume_step}: dropping the {len(records) - len(kept)} records of "
                  f"{self.path} past it (those steps are redone)", file=sys.stderr)
        for rec in kept:
            self.lines.append(json.dumps(rec) + "\n")
            self.last_matrices.update({k: [list(row.values()) for row in v.values()] for k, v in rec.items()
                                       if isinstance(v, dict) and v and isinstance(next(iter(v.values())), dict)})
        if len(kept) < len(records) or not text.endswith("\n"):
            self._write_all()

    def _write_all(self) -> None:
        storage.write_text(self.path, "".join(self.lines))
        self._exists = True

    def write(self, records: list[dict]) -> None:
        """Appends ``records`` as whole JSON lines (no-op when disabled).

        One ``write`` call per batch of lines, uploading only those lines on ``gs://`` (a part
        object composed onto ``metrics.jsonl``: ``ado_jax.storage.append_text``); a failed local
        write (a full disk) leaves at most one partial last line, which the next reader drops."""
        if not self.enabled or not records:
            return
        new = [json.dumps(r) + "\n" for r in records]
        self.lines += new
        storage.append_text(self.path, "".join(new), exists=self._exists)
        self._exists = True
