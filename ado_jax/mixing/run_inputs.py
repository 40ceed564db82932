"""Mixer inputs read from another run's ``metrics.jsonl``: DoReMi's reference losses
(``mixer.reference_run``), Skill-It's skills graph (``mixer.graph_from``).

A run directory may be local or on an object store (``gs://``); the records are matched to the
domains by name, so the other run may have trained more domains, in another order.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["last_record_with", "per_domain", "per_domain_matrix"]


def last_record_with(run_dir: str, key: str, field: str) -> dict:
    """The last record of ``run_dir/metrics.jsonl`` that has ``key``; ``field`` (the config
    field being resolved, e.g. ``mixer.reference_run``) names the input in the errors."""
    from ado_jax import storage

    path = f"{str(run_dir).rstrip('/')}/metrics.jsonl"
    text = storage.read_text(path) or ""
    # Whole lines only (a run still writing may have cut its last one short); the records we read
    # are flat JSON objects, so a line is skipped only when it is not one.
    records = []
    for line in text.splitlines()[:-1] + ([text.splitlines()[-1]] if text.endswith("\n") else []):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and key in rec:
            records.append(rec)
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
