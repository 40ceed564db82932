"""Mixer inputs read from another run's ``metrics.jsonl``: DoReMi's reference losses
(``mixer.reference_run``), Skill-It's skills graph (``mixer.graph_from``).

A run directory may be local or on an object store (``gs://``); the records are matched to the
domains by name, so the other run may have trained more domains, in another order.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["last_record_with", "per_domain", "per_domain_matrix", "read_records"]


def read_records(run_dir: str) -> list[dict] | None:
    """The records of ``run_dir/metrics.jsonl`` (whole lines that are JSON objects), or None when
    there is no such file (``run_dir`` missing, or a file rather than a directory)."""
    from ado_jax import storage

    try:
        text = storage.read_text(f"{str(run_dir).rstrip('/')}/metrics.jsonl")
    except NotADirectoryError:
        return None
    if text is None:
        return None
    lines = text.splitlines()
    if lines and not text.endswith("\n"):  # a run still writing may have cut its last line short
        lines.pop()
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def last_record_with(run_dir: str, key: str, field: str) -> dict:
    """The last record of ``run_dir/metrics.jsonl`` that has ``key``; ``field`` (the config
    field being resolved, e.g. ``mixer.reference_run``) names the input in the errors."""
    path = f"{str(run_dir).rstrip('/')}/metrics.jsonl"
    records = [r for r in read_records(run_dir) or [] if key in r]
    if not records:
        raise ValueError(f"{field}={run_dir}: {path} has no record with {key!r} (is it a finished run of "
                         f"ado-jax train{' with train.eval_every > 0' if key == 'eval_loss' else ''}?)")
    return records[-1]


def per_domain(values: dict, domains, field: str, run_dir: str) -> np.ndarray:
    """``[D]`` float64: ``values[name]`` for each of ``domains``; ValueError naming the missing ones."""
    missing = [d for d in domains if d not in values]
    if missing:
        raise ValueError(f"{field}={run_dir}: no value for domain(s) {missing}; that run has {sorted(values)}")
    out = np.asarray([values[d] for d in domains], np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{field}={run_dir}: non-finite values {dict(zip(domains, out.tolist()))}")
    return out


def per_domain_matrix(rows: dict, domains, field: str, run_dir: str) -> np.ndarray:
    """``[D, D]`` float64 from ``{row name: {column name: value}}`` (how a run logs a matrix)."""
    missing = [d for d in domains if d not in rows]
    if missing:
        raise ValueError(f"{field}={run_dir}: no row for domain(s) {missing}; that run has {sorted(rows)}")
    return np.stack([per_domain(rows[r], domains, field, run_dir) for r in domains])
