"""Reads a run directory's ``metrics.jsonl`` / ``config.json`` and compares runs side by side.

``load_run(run_dir)`` is shared with ``ado_jax.plot``; ``summarize`` / ``markdown_table`` back
``ado-jax compare RUN_DIR...``; ``paired_table`` backs ``ado-jax compare RUN... --against RUN...``
(several seeds of two arms, paired by ``train.seed``: mean difference with a 95 % interval).
Downstream scores (``ado-jax eval --harness``: ``{"harness": {task: {metric: value}}}`` records)
join each row as ``harness/<task>/<metric>`` columns, the latest value of each.
Losses are per-token cross-entropy in nats. The aggregates are those of
``ado_jax.eval_metrics``: the uniform mean over trained domains, the average per-domain
perplexity (the Aioli paper's metric), the natural-weighted mean (the ADO paper's Pile
validation) and the mean over evaluation-only (out-of-distribution) domains.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import numpy as np
from etils import epath

from ado_jax.eval_metrics import AGGREGATES, paired_interval
from ado_jax.run_log import is_event, parse_lines


class Run(NamedTuple):
    """One run's logged history.

    Attributes:
      path: the run directory (an ``etils.epath.Path``: local or ``gs://``).
      config: ``config.json`` as a dict (``{}`` when absent).
      train: training records in step order (one per step; later duplicates of a step win).
      evals: evaluation records (``eval_loss`` dict, ``eval_loss_mean``) in step order.
      names: domain names, in logged order.
      harness: LM Evaluation Harness records (``harness`` dict) in step order.
    """

    path: epath.Path
    config: dict
    train: list
    evals: list
    names: tuple
    harness: tuple = ()


def load_run(run_dir) -> Run:
    """Parses ``run_dir/metrics.jsonl`` (and ``config.json``), local or ``gs://``; raises naming the
    file and line."""
    path = epath.Path(run_dir)
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} does not exist: is {path} a run directory (ado-jax train --run-dir)?")
    train, evals, harness = {}, {}, []
    for rec in parse_lines(metrics.read_text(), metrics):  # a partial last line is dropped, with a warning
        if "harness" in rec:
            harness.append(rec)
        elif not is_event(rec):
            (evals if "eval_loss" in rec else train)[int(rec["step"])] = rec
    train_l, evals_l = [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]
    source = train_l[0].get("weights") if train_l else (evals_l[0]["eval_loss"] if evals_l else None)
    names = tuple(source or ())
    cfg_path = path / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    return Run(path, config, train_l, evals_l, names, tuple(sorted(harness, key=lambda r: r["step"])))


def harness_scores(run: Run) -> dict:
    """``{"harness/<task>/<metric>": value}``: the latest logged value of every harness metric
    (standard errors left out)."""
    out = {}
    for rec in run.harness:
        for task, metrics in rec["harness"].items():
            out.update({f"harness/{task}/{k}": float(v) for k, v in metrics.items() if not k.endswith("_stderr")})
    return out


def per_domain(records: list, key: str, names: tuple) -> np.ndarray | None:
    """``[S, D]`` float64 array of the per-domain dict ``key`` over ``records`` (NaN where absent);
    None when no record has ``key``."""
    if not any(key in r for r in records):
        return None
    return np.array([[float(r.get(key, {}).get(n, math.nan)) for n in names] for r in records], np.float64)


def scalar(records: list, key: str) -> np.ndarray:
    """``[S]`` float64 array of the scalar ``key`` over ``records`` (NaN where absent)."""
    return np.array([float(r.get(key, math.nan)) for r in records], np.float64)


def summarize(run: Run) -> dict:
    """The comparison row of one run: mixer, steps, tokens, final per-domain and mean eval loss, ppl."""
    steps = run.train[-1]["step"] if run.train else 0
    t = run.config.get("train", {})
    tokens = steps * t["batch_size"] * t["seq_len"] if "batch_size" in t and "seq_len" in t else None
    final = run.evals[-1] if run.evals else None
    mean = float(final["eval_loss_mean"]) if final else math.nan
    aggregates = {k: float(final.get(k, math.nan)) if final else math.nan for k in AGGREGATES}
    return {"run": str(run.path), "mixer": run.config.get("mixer", {}).get("name", "?"),
            "seed": t.get("seed"), "steps": steps, "tokens": tokens, "eval_step": final["step"] if final else None,
            "eval_loss": dict(final["eval_loss"]) if final else {}, **aggregates,
            "ppl_of_mean_loss": math.exp(mean) if math.isfinite(mean) else math.nan,
            "skipped_steps": int(np.nansum(scalar(run.train, "skipped"))) if run.train else 0,
            "harness": harness_scores(run)}


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x)


def markdown_table(rows: list[dict]) -> str:
    """A markdown table of ``summarize`` rows: one line per run, one column per domain (union)."""
    domains = list(dict.fromkeys(d for r in rows for d in r["eval_loss"]))
    extra = [k for k in AGGREGATES[1:] if any(math.isfinite(r.get(k, math.nan)) for r in rows)]
    scores = sorted({k for r in rows for k in r.get("harness", {})})
    head = ["run", "mixer", "steps", "tokens", *domains, "mean eval loss", *extra, "ppl = exp(mean)", *scores]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["run"], r["mixer"], _fmt(r["steps"]), _fmt(r["tokens"]),
                 *(_fmt(r["eval_loss"].get(d)) for d in domains), _fmt(r["eval_loss_mean"]),
                 *(_fmt(r[k]) for k in extra), _fmt(r["ppl_of_mean_loss"], 3),
                 *(_fmt(r.get("harness", {}).get(k)) for k in scores)]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Final held-out eval loss (nats/token) per domain at each run's last evaluation; mean eval loss: "
            "uniform over trained domains; eval_ppl_mean: average per-domain perplexity; eval_loss_natural: "
            "weighted by domain size; eval_loss_ood: mean over evaluation-only domains; "
            "ppl = exp(mean over domains of the eval loss); harness/<task>/<metric>: the latest LM Evaluation "
            "Harness score (ado-jax eval --harness).")
    return "\n".join(lines) + "\n\n" + note


def _by_seed(rows: list[dict], side: str) -> dict:
    out = {}
    for r in rows:
        if r["seed"] is None:
            raise ValueError(f"compare --against: {r['run']} has no train.seed in its config.json")
        if r["seed"] in out:
            raise ValueError(f"compare --against: {side} has two runs with train.seed={r['seed']}: "
                             f"{out[r['seed']]['run']} and {r['run']}")
        out[r["seed"]] = r
    return out


def paired_rows(rows_a: list[dict], rows_b: list[dict]) -> list[dict]:
    """Per metric (each aggregate, then each domain's eval loss): the mean over seeds of A minus B,
    paired by ``train.seed``, with the half-width of its 95 % t interval and the number of pairs.

    Raises:
      ValueError: when no seed is in both arms, or an arm repeats a seed.
    """
    a, b = _by_seed(rows_a, "the runs"), _by_seed(rows_b, "--against")
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"compare --against: no seed in common (runs: {sorted(a)}, --against: {sorted(b)})")
    domains = list(dict.fromkeys(d for r in [*rows_a, *rows_b] for d in r["eval_loss"]))
    metrics = [(k, lambda r, k=k: r[k]) for k in AGGREGATES]
    metrics += [(d, lambda r, d=d: r["eval_loss"].get(d, math.nan)) for d in domains]
    scores = sorted({k for r in [*rows_a, *rows_b] for k in r.get("harness", {})})
    metrics += [(k, lambda r, k=k: r.get("harness", {}).get(k, math.nan)) for k in scores]
    out = []
    for name, get in metrics:
        diffs = [get(a[s]) - get(b[s]) for s in seeds]
        mean, half, n = paired_interval(diffs)
        if n:
            out.append({"metric": name, "mean_diff": mean, "ci95": half, "pairs": n, "seeds": seeds,
                        "a_mean": float(np.mean([get(a[s]) for s in seeds])),
                        "b_mean": float(np.mean([get(b[s]) for s in seeds]))})
    return out


def paired_table(rows: list[dict]) -> str:
    """Markdown of ``paired_rows``: A, B, A − B ± 95 % interval per metric."""
    lines = ["| metric | A (mean) | B (mean) | A − B | 95 % interval | pairs |", "|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["mean_diff"] - r["ci95"], r["mean_diff"] + r["ci95"]
        interval = f"[{lo:+.4f}, {hi:+.4f}]" if math.isfinite(r["ci95"]) else "–"
        lines.append(f"| {r['metric']} | {r['a_mean']:.4f} | {r['b_mean']:.4f} | {r['mean_diff']:+.4f} | "
                     f"{interval} | {r['pairs']} |")
    return "\n".join(lines) + ("\n\nPaired by train.seed (same initialization and data seed); negative = A lower. "
                                "Interval: two-sided 95 % Student t over the per-seed differences.")


def compare(run_dirs, as_json: bool = False, against=None) -> str:
    """The ``ado-jax compare`` output for ``run_dirs``: a markdown table, or JSON rows. With
    ``against`` (run directories of a second arm), the paired-by-seed differences instead."""
    if not run_dirs:
        raise ValueError("compare: give at least one run directory")
    rows = [summarize(load_run(d)) for d in run_dirs]
    if against:
        rows = paired_rows(rows, [summarize(load_run(d)) for d in against])
        if not as_json:
            return paired_table(rows)
    if as_json:
        def clean(v):  # strict JSON: NaN/inf become null
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return json.dumps([clean(r) for r in rows], indent=1, allow_nan=False)
    return markdown_table(rows)
