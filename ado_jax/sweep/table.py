"""A sweep's results table: mixtures × per-domain held-out losses × the papers' aggregates.

Written as ``results.json`` and ``results.csv`` in the sweep directory, each atomically
(``ado_jax.storage.write_text``). The JSON is the run table ``ado-jax fit-mixture`` reads
(``ado_jax.mixing.offline_fits.load_table``), with more keys beside it::

    {"domains": [D names], "mixtures": [[D floats] x K],      # what fit-mixture reads
     "eval_domains": [M names], "losses": [[M floats] x K],   # trained, then evaluation-only domains
     "sizes": [D token counts],
     "eval_only_domains": [names], "seeds": [K], "step": S, "train_loss": [K],
     "aggregates": {"eval_loss_mean": [K], "eval_ppl_mean": [K], "eval_loss_natural": [K],
                    "eval_loss_ood": [K] (with evaluation-only domains)},
     "sampler": {...}}

The CSV has one row per proxy: ``proxy``, ``seed``, ``weight/<domain>`` ×D, ``loss/<domain>``
×M, the aggregates and ``train_loss`` (fit-mixture reads its ``weight/`` and ``loss/`` columns;
the ``natural`` target needs the JSON, which alone carries ``sizes``).
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from ado_jax import storage
from ado_jax.eval_metrics import aggregate

JSON_NAME, CSV_NAME = "results.json", "results.csv"


def build_table(mixtures_KD, losses_KM, names, eval_names, sizes_D, eval_only, seeds_K, step: int,
                train_loss_K=None, sampler: dict | None = None) -> dict:
    """The results table (module doc) as a dict.

    Args:
      mixtures_KD: [K, D] each proxy's mixture over the trained domains ``names``.
      losses_KM: [K, M] each proxy's held-out loss on ``eval_names`` (the D trained domains, then
        the evaluation-only ones ``eval_only``).
      sizes_D: [D] tokens per trained domain (natural weights).
      seeds_K: [K] each proxy's ``train.seed``; step: the steps trained.
      train_loss_K: [K] each proxy's last training loss (optional); sampler: how the mixtures were drawn.
    """
    p, y = np.asarray(mixtures_KD, np.float64), np.asarray(losses_KM, np.float64)
    names, eval_names = list(names), list(eval_names)
    sizes = {n: float(s) for n, s in zip(names, np.asarray(sizes_D, np.float64))}
    rows = [aggregate(dict(zip(eval_names, map(float, y_M))), sizes, tuple(eval_only)) for y_M in y]
    aggs = {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
    out = {"domains": names, "mixtures": p.tolist(), "eval_domains": eval_names, "losses": y.tolist(),
           "sizes": list(sizes.values()), "eval_only_domains": list(eval_only),
           "seeds": [int(s) for s in seeds_K], "step": int(step), "aggregates": aggs}
    if train_loss_K is not None:
        out["train_loss"] = [float(v) for v in np.asarray(train_loss_K)]
    if sampler is not None:
        out["sampler"] = sampler
    return out


def table_csv(table: dict) -> str:
    """The table as CSV text, one row per proxy (module doc)."""
    cols = (["proxy", "seed"] + [f"weight/{d}" for d in table["domains"]] + [f"loss/{d}" for d in table["eval_domains"]]
            + list(table["aggregates"]) + (["train_loss"] if "train_loss" in table else []))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for k, (p, y) in enumerate(zip(table["mixtures"], table["losses"])):
        aggs = [table["aggregates"][a][k] for a in table["aggregates"]]
        w.writerow([k, table["seeds"][k], *map(repr, p), *map(repr, y), *map(repr, aggs),
                    *([repr(table["train_loss"][k])] if "train_loss" in table else [])])
    return buf.getvalue()


def write_table(directory, table: dict) -> tuple[str, str]:
    """Writes ``results.json`` and ``results.csv`` into ``directory`` (local or gs://), each
    atomically; returns their paths."""
    base = str(directory).rstrip("/")
    json_path, csv_path = f"{base}/{JSON_NAME}", f"{base}/{CSV_NAME}"
    storage.write_text(json_path, json.dumps(table, indent=1) + "\n")
    storage.write_text(csv_path, table_csv(table))
    return json_path, csv_path
