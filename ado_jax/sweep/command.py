"""``ado-jax sweep``: its flags and its entry point (``ado_jax.sweep.run`` does the work).

    ado-jax sweep --config tiny --set train.steps=200 --sampler regmix --num 16 --sweep-dir runs/sweep
    ado-jax fit-mixture runs/sweep/results.json --method regmix-linear --target uniform --out w.json
    ado-jax train --set mixer.name=static --set mixer.weights_from=w.json

Imports nothing heavy until the command runs (``ado-jax --help`` stays fast).
"""

from __future__ import annotations

import json

SAMPLERS = ("regmix", "grid", "dirichlet", "given")  # ado_jax.sweep.samplers.SAMPLERS


def add_args(p) -> None:
    """The ``ado-jax sweep`` flags on the argparse parser ``p``."""
    p.add_argument("--config", default="tiny", help="preset name or JSON file: every proxy's model, optimizer, steps "
                   "and data (its mixer section is ignored: each proxy is a static mixture)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.steps=200 (repeatable)")
    p.add_argument("--steps", type=int, help="shortcut for --set train.steps=N (a rerun may raise it)")
    p.add_argument("--sweep-dir", default="runs/sweep", help="the sweep directory (local or gs://): sweep.json, "
                   "checkpoints/, metrics.jsonl, results.json, results.csv; a rerun resumes it")
    p.add_argument("--sampler", default="regmix", choices=SAMPLERS,
                   help="regmix: RegMix's Dirichlet around the token distribution (prior^0.5, strengths "
                        "geomspace(0.1, 5, 15), weights < 2e-4 zeroed, --max-epochs cap); grid: every mixture on "
                        "the 1/--resolution simplex grid; dirichlet: --num draws from Dirichlet(--alpha); given: "
                        "the rows of --mixtures")
    p.add_argument("--num", type=int, default=16, help="K, the number of proxies (regmix, dirichlet)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (proxies use train.seed)")
    p.add_argument("--resolution", type=int, default=4, help="grid: weights are multiples of 1/RESOLUTION")
    p.add_argument("--alpha", type=float, default=1.0, help="dirichlet: the concentration")
    p.add_argument("--max-epochs", type=float, default=15.0,
                   help="regmix: no proxy sees more than this many epochs of a domain's tokens (0: no cap)")
    p.add_argument("--distinct-seeds", action="store_true",
                   help="proxy k uses train.seed + k (default: all proxies share train.seed's init and data key)")
    p.add_argument("--chunk", type=int, metavar="N",
                   help="proxies computed at once on each device (a lax.map over chunks of N, each vmapped); 0: "
                        "all K in one vmap; default: 1 on CPU (faster there: all K vmapped is ~1.3x slower at "
                        "K=16), all K on an accelerator. Changes speed only (float rounding)")
    p.add_argument("--mixtures", metavar="FILE", help="given: a JSON list of mixtures, each [D weights] in the "
                   "trained domains' order or {domain: weight}; or {\"domains\": [...], \"mixtures\": [[...]]}")


def _read_mixtures(path: str) -> list:
    """The rows of a ``--mixtures`` file (``add_args``), as lists or ``{domain: weight}`` dicts."""
    from ado_jax import storage

    obj = storage.read_json(path, f"--mixtures {path}")
    if isinstance(obj, dict) and "domains" in obj and "mixtures" in obj:
        names = obj["domains"]
        for k, row in enumerate(obj["mixtures"]):
            if not isinstance(row, list) or len(row) != len(names):
                raise ValueError(f"--mixtures {path}: mixture {k} {row!r} has not {len(names)} weights for {names}")
        return [dict(zip(names, row)) for row in obj["mixtures"]]
    if not isinstance(obj, list):
        raise ValueError(f"--mixtures {path}: expected a list of mixtures or {{\"domains\", \"mixtures\"}}")
    return obj


def sweep_main(args) -> int:
    """``ado-jax sweep``: runs (or resumes) the sweep in ``--sweep-dir``; prints a one-line JSON summary."""
    import numpy as np

    from ado_jax.config import load_config
    from ado_jax.run_control import RunStopped
    from ado_jax.sweep.run import SweepSpec, run_sweep

    overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
    cfg = load_config(args.config, overrides)
    spec = SweepSpec(sampler=args.sampler, num=args.num, seed=args.seed, resolution=args.resolution,
                     alpha=args.alpha, max_epochs=args.max_epochs or None, distinct_seeds=args.distinct_seeds,
                     mixtures=_read_mixtures(args.mixtures) if args.mixtures else None)
    if spec.sampler in ("grid", "given"):
        spec.num = 0  # K is the number of rows
    try:
        result = run_sweep(cfg, spec, args.sweep_dir, chunk=args.chunk)
    except RunStopped as e:
        print(e)
        return e.exit_code
    best = int(np.argmin(result["aggregates"]["eval_loss_mean"]))
    print(json.dumps({"sweep_dir": args.sweep_dir, "proxies": len(result["mixtures"]), "step": result["step"],
                      "best_uniform": {"proxy": best, "eval_loss_mean": result["aggregates"]["eval_loss_mean"][best],
                                       "weights": dict(zip(result["domains"], result["mixtures"][best]))}}))
    return 0
