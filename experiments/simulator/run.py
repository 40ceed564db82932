"""Simulator: the regimes each paper assumes — ADO and Aioli checked where their assumptions hold.

    python experiments/simulator/run.py [--parts ado forecast aioli] [--seeds 10] [--force]
    python experiments/simulator/run.py --quick          # smoke test: 600 steps, 3 seeds, /tmp
    python experiments/simulator/run.py --figures-only   # redraw docs/figures/simulator_*.png

Pure-JAX stand-ins for training runs (``ado_jax.mixing.simulator``), every loss above 2 nats at
every step (so no fit box of ADO's fitter can bind for want of room), 5000 steps of 32 sequences.

Environments (parameters in ``ENVS`` below, recorded in results.json):

- ``power3``: ``PowerLawEnv``, 3 domains whose loss falls at different speeds (alpha 0.6 / 0.3 /
  0.1), irreducible losses 2.0 / 2.4 / 3.0, transfer between domains 0 and 1 (0.3 each way) and
  from 2 to both (0.1); natural sizes 1 : 2 : 6 (the largest domain is the slow, high-entropy
  one, as web text in the Pile). ADO's regime: per-domain power laws in the data seen.
- ``power5``: ``PowerLawEnv``, 5 domains, alpha 0.2–0.6, eps 2.0–3.2, every pair transfers 0.15;
  sizes 1 : 2 : 3 : 4 : 5.
- ``linear3``: ``LinearLawEnv``, Aioli's linear dynamic mixing law ``L^{t+1} = L^t - A p^t`` with
  a known constant A (off-diagonal transfer; column sums favour domain 0), losses from 8.5 / 6.5 /
  5.5, never below 2.5 in 5000 steps whatever the mixture. Aioli's regime.

Parts (each saved into experiments/simulator/results.json, written atomically; a part already
there for the same steps and seeds is skipped unless ``--force`` — so the script resumes):

- ``ado`` (ADO, "Adaptive Data Optimization: Dynamic Sample Selection with Scaling Laws",
  arXiv:2410.11820, §4 and its Table 3 s-ablation): ADO with the natural and the uniform prior
  x credit exponent s in {0, 0.5, 1} (plus natural/s=0.5 with the reference code's fit box), vs
  balanced, natural and the best static mixture for each score (found on the noiseless law), in
  power3 and power5, 10 seeds. Scored on the uniform mean and the natural-weighted mean of the
  final true per-domain losses; paired (by seed) differences vs balanced, 95 % t intervals; fit
  diagnostics of ADO's last fit (share of domains with a parameter on a bound of the fitter's box,
  in-sample mean |log residual|).
- ``forecast`` (ADO Fig. 6): in ADO's own runs (natural prior, s = 0.5) and, as a control, in a
  balanced run, fit ``fit_power_law`` (default bounds) to the tracker's history at 25, 50, 75 % of
  training and compare the forecast with the realised true loss for the rest of the run.
- ``aioli`` (Aioli, "Aioli: A Unified Optimization Framework for Language Model Data Mixing",
  arXiv:2411.05735; its m = 3 settings: T = 20, k = 4, delta = 0.288, eps = 0.75, eta = 0.2):
  per round, the similarity of Fig. 3 between Aioli's estimated A and the true A (the constant A
  in linear3, the local linearisation ``PowerLawEnv.local_a`` at the round's start in power3);
  a held-out-noise sweep giving (similarity, improvement over balanced) pairs, Fig. 3's
  correlation; an eta sweep; and Table 3's restricted setting (GS = 10 runs of S/20 steps on
  Dirichlet points; Aioli+GS = S/20 steps on GS's mixture, then Aioli) against GS.

Figures: docs/figures/simulator_{ado,forecasts,aioli_a,aioli_eta_restricted}.png.
Time: about 8 minutes on 2 shared CPU cores with a cold compile cache (ado ~3.5, forecast ~1,
aioli ~3.5), almost all of it XLA compiles (one per mixer configuration; an ADO run then takes
~0.5 s, an Aioli run less); compiled programs are cached in $ADO_JAX_SIM_CACHE (default
/tmp/ado_jax_sim_cache), so a rerun takes under 5 minutes. Prints the markdown tables that
docs/results.md ("Simulator: the regimes each paper assumes") quotes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.mixing import aioli, dirichlet_points, simplex_grid, static
from ado_jax.mixing.ado import ado, fitted_values
from ado_jax.mixing.scaling_law import fit_power_law, predict
from ado_jax.mixing.simulator import LinearLawEnv, PowerLawEnv, run, run_from
from ado_jax.mixing.tracker import fit_data

try:
    from ado_jax.eval_metrics import paired_interval
except ImportError:  # pragma: no cover - older trees
    _T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
             10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}

    def paired_interval(diffs):
        x = np.asarray([d for d in diffs if d is not None and math.isfinite(d)], np.float64)
        if x.size < 2:
            return (float(x[0]) if x.size else math.nan), math.nan, int(x.size)
        t = _T975.get(x.size - 1, 1.96)
        return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(x.size)), int(x.size)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FIGS = ROOT / "docs" / "figures"
STEPS, BATCH, SEEDS = 5000, 32, 10
FRACTIONS = (0.25, 0.5, 0.75)
AIOLI = dict(rounds=20, sweeps=4, delta=0.288, eps=0.75)  # the paper's m = 3 values (Tables 15-16)
ETAS = (0.05, 0.1, 0.2, 0.5, 1.0)
HELDOUT_NOISES = (0.0, 0.0005, 0.001, 0.002, 0.005)


def envs(batch=BATCH):
    """name -> (env, natural sizes, parameters as JSON)."""
    a = np.array([[3.0, 1.0, 0.5], [0.2, 2.0, 0.1], [1.0, 0.3, 1.5]]) * 4e-4
    t3 = np.array([[1.0, 0.3, 0.1], [0.3, 1.0, 0.1], [0.0, 0.0, 1.0]])
    t5 = np.eye(5) + 0.15 * (np.ones((5, 5)) - np.eye(5))
    spec = {
        "power3": ("power", dict(eps=[2.0, 2.4, 3.0], beta=[4.0, 2.5, 2.0], alpha=[0.6, 0.3, 0.1],
                                 transfer=t3.tolist(), scale=50.0, noise=0.2, heldout_noise=0.0005),
                   [1.0, 2.0, 6.0]),
        "power5": ("power", dict(eps=[2.0, 2.2, 2.8, 3.2, 2.4], beta=[4.0, 1.0, 2.0, 0.5, 3.0],
                                 alpha=[0.6, 0.2, 0.35, 0.3, 0.25], transfer=t5.tolist(), scale=50.0, noise=0.2,
                                 heldout_noise=0.0005), [1.0, 2.0, 3.0, 4.0, 5.0]),
        "linear3": ("linear", dict(a=a.tolist(), loss0=[8.5, 6.5, 5.5], noise=0.2, heldout_noise=0.0005),
                    [1.0, 2.0, 4.0]),
    }
    out = {}
    for name, (kind, p, sizes) in spec.items():
        arr = {k: (jnp.asarray(v, jnp.float32) if isinstance(v, list) else v) for k, v in p.items()}
        cls = PowerLawEnv if kind == "power" else LinearLawEnv
        env = cls(**arr, batch_size=batch, sample_counts=True)
        out[name] = (env, sizes, {"kind": cls.__name__, **p, "batch_size": batch, "sample_counts": True,
                                  "natural_sizes": sizes})
    return out


def static_traced(w_D):
    """A static mixer whose weights may be a traced array (one compile for many mixtures)."""
    m = static(np.ones(w_D.shape[0]))
    return m._replace(init=lambda n: m.init(n)._replace(weights=jnp.asarray(w_D, jnp.float32)))


def ado_kwargs(steps):
    """ADO's schedule scaled from the paper's 60k steps (fit from step 5000 every 1000, skip the
    first 500, every 10th step) to ``steps``: fit from 10 % every 5 %, skip 3 %, every 5th step."""
    return dict(fit_start=steps // 10, fit_every=steps // 20, skip_first=3 * steps // 100, subsample_every=5)


def _round(obj, digits=6):
    """Floats to ``digits`` significant digits (the file stays small; tables show 4 decimals)."""
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, digits) for v in obj]
    if isinstance(obj, float) and math.isfinite(obj):
        return float(f"{obj:.{digits}g}")
    return obj


def _write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    text = json.dumps(_round(obj), indent=1)
    # lists of numbers on one line each (indent=1 would give every number its own line)
    text = re.sub(r"\[\s*([-+0-9.eE,\sNaInfity]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _pi(x):
    m, hw, n = paired_interval([float(v) for v in x])
    return {"mean": m, "hw": hw, "n": n}


def _log(msg, t0):
    print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Part a: ADO's prior and credit exponent vs balanced / natural / best static
# ---------------------------------------------------------------------------------------------

def best_static(env, steps, mu_D, d):
    """Best static mixtures on the noiseless law (expected counts): for the uniform and the
    natural-weighted score, on the simplex grid (step 1/20 for D <= 3, 1/8 for D = 5)."""
    pts = jnp.asarray(simplex_grid(d, 20 if d <= 3 else 8))
    clean = dataclasses.replace(env, sample_counts=False, noise=0.0, heldout_noise=0.0)
    fin = jax.jit(jax.vmap(lambda w: run(static_traced(w), clean, steps, jax.random.PRNGKey(0)).loss[-1]))(pts)
    fin = np.asarray(fin)
    return {"uniform": np.asarray(pts[np.argmin(fin.mean(1))]), "natural": np.asarray(pts[np.argmin(fin @ mu_D)])}


def part_ado(name, env, sizes, steps, seeds, t0):
    d = len(sizes)
    mu = np.asarray(sizes) / np.sum(sizes)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    arms = {}

    def record(label, loss_KD, w_KSD=None, diag=None, prior=None):
        loss_KD = np.asarray(loss_KD, np.float64)
        arms[label] = {"final": loss_KD.tolist(), "uniform": loss_KD.mean(1).tolist(),
                       "natural": (loss_KD @ mu).tolist(), "prior": prior}
        if w_KSD is not None:
            arms[label]["mean_weights"] = np.asarray(w_KSD).mean((0, 1)).tolist()
            arms[label]["final_weights"] = np.asarray(w_KSD)[:, -1].mean(0).tolist()
        if diag is not None:
            arms[label]["diag"] = diag

    best = best_static(env, steps, mu, d)
    statics = {"balanced": (np.full(d, 1.0 / d), "uniform"), "natural": (mu, "natural"),
               "best static (uniform score)": (best["uniform"], "-"),
               "best static (natural score)": (best["natural"], "-")}
    run_static = jax.jit(jax.vmap(lambda w, k: run(static_traced(w), env, steps, k).loss[-1], in_axes=(None, 0)))
    for label, (w, prior) in statics.items():
        record(label, run_static(jnp.asarray(w, jnp.float32), keys), np.broadcast_to(w, (1, 1, d)), prior=prior)
        arms[label]["weights"] = np.asarray(w).tolist()
    _log(f"ado/{name}: static arms", t0)

    configs = [(p, s, "data") for p in ("natural", "uniform") for s in (0.0, 0.5, 1.0)]
    configs.append(("natural", 0.5, "reference"))
    for prior, s, box in configs:
        kw = {} if box == "data" else {"bounds": box}
        m = ado(sizes if prior == "natural" else None, s=s, **ado_kwargs(steps), **kw)
        one = jax.jit(lambda e, k, m=m: run(m, e, steps, k))  # seeds in a loop: vmap would turn
        outs = [one(env, k) for k in keys]                   # its lax.cond fits into selects
        fv = [{k: np.asarray(v) for k, v in fitted_values(o.mixer_state).items()} for o in outs]
        on_bound = np.stack([f["on_bound"] for f in fv])
        known = np.isfinite(on_bound)
        diag = {"on_bound_share": float(np.mean(on_bound[known] != 0)) if known.any() else math.nan,
                "unfitted_share": float(np.mean(~known)),
                "on_bound_codes": on_bound.tolist(),
                "err_mean": float(np.nanmean(np.stack([f["err"] for f in fv]))),
                "eps_fit_mean": np.nanmean(np.stack([f["eps"] for f in fv]), 0).tolist(),
                "alpha_fit_mean": np.nanmean(np.stack([f["alpha"] for f in fv]), 0).tolist(),
                "num_fits": int(np.asarray(outs[0].mixer_state.num_fits))}
        label = f"ADO prior={prior} s={s:g}" + ("" if box == "data" else " (reference box)")
        record(label, np.stack([np.asarray(o.loss[-1]) for o in outs]), np.stack([np.asarray(o.weights) for o in outs]),
               diag, prior=prior)
        _log(f"ado/{name}: {label}", t0)

    base_u, base_n = np.asarray(arms["balanced"]["uniform"]), np.asarray(arms["balanced"]["natural"])
    for a in arms.values():
        a["vs_balanced"] = {"uniform": _pi(np.asarray(a["uniform"]) - base_u),
                            "natural": _pi(np.asarray(a["natural"]) - base_n)}
    nat_u, nat_n = np.asarray(arms["natural"]["uniform"]), np.asarray(arms["natural"]["natural"])
    for a in arms.values():
        a["vs_natural"] = {"uniform": _pi(np.asarray(a["uniform"]) - nat_u),
                           "natural": _pi(np.asarray(a["natural"]) - nat_n)}
    return {"arms": arms, "ado_kwargs": ado_kwargs(steps)}


# ---------------------------------------------------------------------------------------------
# Part b: ADO's forecasts (Fig. 6)
# ---------------------------------------------------------------------------------------------

def part_forecast(name, env, sizes, steps, seeds, t0):
    d = len(sizes)
    forecast = lambda params, n: np.asarray(predict(params, jnp.broadcast_to(jnp.asarray(n, jnp.float32),
                                                                          (d, len(n))))).T   # [len(n), D]
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    q = steps // 4
    fit = jax.jit(lambda n, y, m: fit_power_law(n, y, m, return_info=True))
    runs = {"ADO (natural prior, s=0.5)": ado(sizes, s=0.5, **ado_kwargs(steps)),
            # ADO that never fits: its weights stay at the (uniform) prior, its tracker records
            # the same history as ADO's would: a balanced run with ADO's data.
            "balanced (control)": ado(None, **{**ado_kwargs(steps), "fit_start": 10 ** 9})}
    out = {}
    for label, m in runs.items():
        chunk = jax.jit(lambda e, k, ms, es, m=m: run_from(m, e, q, k, ms, es))
        keep_curves = label.startswith("ADO")  # seed 0's curves, for the figure
        rows, curve0 = [], None
        for si, key in enumerate(keys):
            ms, es, k = m.init(d), env.init(), key
            losses, fits = [], []
            for c in range(4):
                if c > 0:
                    n_DT, y_DT, mask_DT = fit_data(ms.tracker)
                    params, _, info = fit(n_DT, y_DT, mask_DT)
                    fits.append((c * q, params, info, (np.asarray(n_DT), np.asarray(y_DT), np.asarray(mask_DT))))
                r = chunk(env, k, ms, es)
                ms, es, k = r.mixer_state, r.env_state, r.key
                losses.append(np.asarray(r.loss))
            true_SD = np.concatenate(losses)                       # loss after step t, n = B (t + 1)
            n_S = env.batch_size * (np.arange(steps) + 1.0)
            per_fit = []
            for t_fit, params, info, hist in fits:
                pred_SD = forecast(params, n_S[t_fit:])
                err_SD = np.log(pred_SD) - np.log(true_SD[t_fit:])
                per_fit.append({"step": t_fit, "mean_abs_log_err": np.abs(err_SD).mean(0).tolist(),
                                "final_log_err": err_SD[-1].tolist(),
                                "on_bound": np.asarray(info.on_bound).tolist(),
                                "in_sample_err": np.asarray(info.err).tolist(),
                                "eps": np.exp(np.asarray(params.log_eps)).tolist(),
                                "alpha": np.asarray(params.alpha).tolist()})
                if si == 0 and keep_curves:
                    curve0 = curve0 or {"steps": list(range(0, steps, 10)), "true": true_SD[::10].tolist(),
                                        "forecasts": []}
                    full = forecast(params, n_S[::10])
                    curve0["forecasts"].append({"step": t_fit, "pred": full.tolist()})
                    n_DT, y_DT, mask_DT = hist
                    if t_fit == 3 * q:
                        curve0["history_75"] = [{"step": (n_DT[i][mask_DT[i]] / env.batch_size - 1).tolist(),
                                                 "loss": y_DT[i][mask_DT[i]].tolist()} for i in range(d)]
            rows.append(per_fit)
        summary = {}
        for j, f in enumerate(FRACTIONS):
            mae = np.array([r[j]["mean_abs_log_err"] for r in rows])      # [seeds, D]
            fin = np.array([r[j]["final_log_err"] for r in rows])
            ob = np.array([r[j]["on_bound"] for r in rows])
            summary[str(f)] = {"mean_abs_log_err": float(mae.mean()),
                               "mean_abs_log_err_per_domain": mae.mean(0).tolist(),
                               "final_abs_log_err": float(np.abs(fin).mean()),
                               "final_log_err_per_domain": fin.mean(0).tolist(),
                               "share_overestimate_final": float((fin > 0).mean()),
                               "share_on_bound": float((ob != 0).mean()),
                               "in_sample_err": float(np.mean([r[j]["in_sample_err"] for r in rows]))}
        out[label] = {"summary": summary, "per_seed": rows, "curves_seed0": curve0}
        _log(f"forecast/{name}: {label}", t0)
    return out


# ---------------------------------------------------------------------------------------------
# Part c: Aioli — A estimates (Fig. 3), eta sweep, restricted setting (Table 3)
# ---------------------------------------------------------------------------------------------

def similarity(a_est, a_true):
    """Aioli Fig. 3's sim(Ã, A*): 0.5 cos + 0.5 Spearman of the L2-normalized column sums."""
    from scipy.stats import spearmanr

    u, v = np.asarray(a_est).sum(0), np.asarray(a_true).sum(0)
    if not (np.all(np.isfinite(u)) and np.linalg.norm(u) > 0):
        return math.nan
    cos = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    rho = spearmanr(u, v).statistic
    return 0.5 * cos + 0.5 * float(0.0 if not np.isfinite(rho) else rho)


def aioli_rounds_runner(steps, d, eta, init_steps, rounds=AIOLI["rounds"], with_init=False):
    """jit(vmap over seeds) of an Aioli run that also returns, per round, the estimated A (raw
    and normalized) and the true A at the round's start. With ``with_init`` the first
    ``init_steps`` follow a given (traced) static mixture: Aioli+GS."""
    round_steps = (steps - init_steps) // rounds
    rest = steps - init_steps - rounds * round_steps

    def one(env, key, seed, w_init):
        kw = dict(AIOLI, eta=eta, seed=seed, init_steps=init_steps)
        if with_init:
            kw["init_mixer"] = static_traced(w_init)
        m = aioli(steps, **kw)
        r = run_from(m, env, init_steps, key, m.init(d), env.init())

        def body(carry, _):
            ms, es, k = carry
            a_true = env.local_a(es.seen)
            rr = run_from(m, env, round_steps, k, ms, es)
            mst = rr.mixer_state
            return (mst, rr.env_state, rr.key), (mst.a_raw, mst.a_bar, a_true, rr.weights.mean(0), mst.rounds_done)

        (ms, es, k), per = jax.lax.scan(body, (r.mixer_state, r.env_state, r.key), None, length=rounds)
        if rest:
            rr = run_from(m, env, rest, k, ms, es)
            ms, es = rr.mixer_state, rr.env_state
        return per, es.loss

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))


def merged_dirichlet(key, d, n=10, over=4):
    """The paper's sweep points (App. D): 4n Dirichlet(1) draws, closest pairs merged into
    their centroid until n remain."""
    pts = [p for p in dirichlet_points(key, d, n * over)]
    wts = [1.0] * len(pts)
    while len(pts) > n:
        p = np.stack(pts)
        dist = np.linalg.norm(p[:, None] - p[None], axis=-1) + np.diag(np.full(len(pts), np.inf))
        i, j = np.unravel_index(np.argmin(dist), dist.shape)
        i, j = min(i, j), max(i, j)
        merged = (wts[i] * pts[i] + wts[j] * pts[j]) / (wts[i] + wts[j])
        pts[i], wts[i] = merged, wts[i] + wts[j]
        del pts[j], wts[j]
    return np.stack(pts).astype(np.float32)


def part_aioli(name, env, sizes, steps, seeds, t0, noise_sweep=False):
    d = len(sizes)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    seed_ids = jnp.arange(seeds)
    dummy_w = jnp.full((seeds, d), 1.0 / d)
    run_static = jax.jit(jax.vmap(lambda e, w, k: run(static_traced(w), e, steps, k).loss[-1], in_axes=(None, 0, 0)))
    bal = np.asarray(run_static(env, dummy_w, keys))
    out = {"balanced_final": bal.tolist(), "eta": {}}

    def summarize(per, final):
        a_raw, a_bar, a_true, w_mean, done = (np.asarray(x) for x in per)
        sim_of = lambda est: np.array([[similarity(est[s, t], a_true[s, t]) for t in range(est.shape[1])]
                                       for s in range(seeds)])
        sims, sims_raw = sim_of(a_bar), sim_of(a_raw)
        rel = np.linalg.norm(a_raw - a_true, axis=(-2, -1)) / np.linalg.norm(a_true, axis=(-2, -1))
        final = np.asarray(final)
        return {"sim_per_round": sims.tolist(), "sim_raw_per_round": sims_raw.tolist(),
                "rel_err_per_round": rel.tolist(),
                "rounds_estimated": done[:, -1].tolist(), "mean_weights_per_round": w_mean.mean(0).tolist(),
                "final": final.tolist(), "uniform": final.mean(1).tolist(),
                "vs_balanced": _pi(final.mean(1) - bal.mean(1)), "sim_mean": float(np.nanmean(sims))}

    runners = {}
    for eta in ETAS:
        runners[eta] = aioli_rounds_runner(steps, d, eta, init_steps=1)
        per, final = runners[eta](env, keys, seed_ids, dummy_w)
        out["eta"][str(eta)] = summarize(per, final)
        _log(f"aioli/{name}: eta={eta} vs balanced {out['eta'][str(eta)]['vs_balanced']['mean']:+.4f}, "
             f"sim {out['eta'][str(eta)]['sim_mean']:.3f}", t0)

    if noise_sweep:  # Fig. 3: similarity vs improvement, across held-out noise levels (eta = 0.2)
        out["noise_sweep"] = {}
        for hn in HELDOUT_NOISES:
            e2 = dataclasses.replace(env, heldout_noise=hn)
            b2 = np.asarray(run_static(e2, dummy_w, keys))
            per, final = runners[0.2](e2, keys, seed_ids, dummy_w)
            s = summarize(per, final)
            final = np.asarray(final)
            s["improvement"] = (b2.mean(1) - final.mean(1)).tolist()
            s["sim_seed_mean"] = np.nanmean(np.asarray(s["sim_per_round"]), 1).tolist()
            out["noise_sweep"][str(hn)] = {k: s[k] for k in ("improvement", "sim_seed_mean", "vs_balanced", "sim_mean")}
            _log(f"aioli/{name}: heldout_noise={hn} sim {s['sim_mean']:.3f}", t0)
        xs = np.concatenate([v["sim_seed_mean"] for v in out["noise_sweep"].values()])
        ys = np.concatenate([v["improvement"] for v in out["noise_sweep"].values()])
        out["noise_sweep_r2"] = float(np.corrcoef(xs, ys)[0, 1] ** 2)

    # Table 3, restricted: GS learns p on 10 runs of S/20 steps, then trains the full run on it;
    # Aioli+GS trains S/20 steps on p_GS, then runs Aioli (Alg. 1: p^0 = uniform) for the rest.
    short = steps // 20
    pts = np.stack([merged_dirichlet(jax.random.fold_in(k, 1), d) for k in keys])           # [seeds, 10, D]
    def score(length):  # [seeds, 10] mean held-out loss at the end of a run of `length` steps
        def one(w, k):
            r = run(static_traced(w), env, length, k)
            return env.heldout(r.env_state, jax.random.fold_in(k, 7)).mean()
        return np.asarray(jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None))))(jnp.asarray(pts), keys))

    p_gs = pts[np.arange(seeds), np.argmin(score(short), 1)]
    p_gs_full = pts[np.arange(seeds), np.argmin(score(steps), 1)]
    gs = np.asarray(run_static(env, jnp.asarray(p_gs), keys))
    gs_full = np.asarray(run_static(env, jnp.asarray(p_gs_full), keys))
    aioli_gs = aioli_rounds_runner(steps, d, 0.2, init_steps=short, with_init=True)
    per, a_gs = aioli_gs(env, keys, seed_ids, jnp.asarray(p_gs))
    a_gs = np.asarray(a_gs)
    plain = np.asarray(out["eta"]["0.2"]["final"])
    rows = {"GS (restricted: 10 runs of S/20)": gs, "Aioli+GS (restricted)": a_gs,
            "GS (unrestricted: 10 full runs)": gs_full, "Aioli (eta=0.2)": plain}
    out["restricted"] = {
        "p_gs": p_gs.tolist(), "p_gs_full": p_gs_full.tolist(), "short_steps": short,
        "rows": {k: {"uniform": v.mean(1).tolist(), "vs_balanced": _pi(v.mean(1) - bal.mean(1))}
                 for k, v in rows.items()},
        "aioli_gs_minus_gs": _pi(a_gs.mean(1) - gs.mean(1)),
        "aioli_gs_wins": int(np.sum(a_gs.mean(1) < gs.mean(1))),
        "aioli_gs_sim_mean": summarize(per, a_gs)["sim_mean"]}
    _log(f"aioli/{name}: restricted Aioli+GS - GS {out['restricted']['aioli_gs_minus_gs']['mean']:+.4f}", t0)
    return out


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def _fig(**kw):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    return Figure(layout="constrained", **kw)


def _save(fig, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print("wrote", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def figures(res, figdir: Path):
    if "ado" in res:
        envs_ = list(res["ado"])
        fig = _fig(figsize=(6.2 * len(envs_), 4.2))
        for i, e in enumerate(envs_):
            ax = fig.add_subplot(1, len(envs_), i + 1)
            arms = [a for a in res["ado"][e]["arms"] if a != "balanced"]
            y = np.arange(len(arms))
            for off, score, col in ((-0.15, "uniform", "C0"), (0.15, "natural", "C3")):
                m = [res["ado"][e]["arms"][a]["vs_balanced"][score]["mean"] for a in arms]
                hw = [res["ado"][e]["arms"][a]["vs_balanced"][score]["hw"] for a in arms]
                ax.errorbar(m, y + off, xerr=hw, fmt="o", color=col, ms=4, capsize=2,
                            label=f"{score}-weighted final loss" if score == "natural" else "uniform mean final loss")
            ax.axvline(0, color="k", lw=0.8)
            ax.set_yticks(y, arms, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("final loss minus balanced (same seed), mean and 95 % interval")
            ax.set_title(f"{e}: ADO vs balanced (lower is better)", fontsize=10)
            ax.legend(fontsize=7, loc="best")
        _save(fig, figdir / "simulator_ado.png")

    if "forecast" in res:
        e = "power3" if "power3" in res["forecast"] else next(iter(res["forecast"]))
        c = res["forecast"][e]["ADO (natural prior, s=0.5)"]["curves_seed0"]
        true = np.asarray(c["true"])
        d = true.shape[1]
        fig = _fig(figsize=(4.2 * d, 3.6))
        for i in range(d):
            ax = fig.add_subplot(1, d, i + 1)
            h = c.get("history_75")
            if h:
                ax.plot(h[i]["step"], h[i]["loss"], ".", color="0.75", ms=2, label="observed train loss (to 75 %)")
            ax.plot(c["steps"], true[:, i], "k-", lw=1.5, label="realised (true loss)")
            for j, f in enumerate(c["forecasts"]):
                pred = np.asarray(f["pred"])[:, i]
                st = np.asarray(c["steps"])
                ax.plot(st[st >= f["step"]], pred[st >= f["step"]], "--", color=f"C{j}",
                        label=f"forecast fit at step {f['step']}")
                ax.axvline(f["step"], color=f"C{j}", ls=":", lw=0.8)
            lo, hi = true[-1, i], true[len(true) // 10, i]
            ax.set_ylim(lo - 0.15 * (hi - lo) - 0.02, hi + 0.1 * (hi - lo))
            ax.set_xlabel("step")
            ax.set_title(f"{e}, domain {i}", fontsize=10)
            if i == 0:
                ax.set_ylabel("loss")
                ax.legend(fontsize=7)
        _save(fig, figdir / "simulator_forecasts.png")

    if "aioli" in res:
        envs_ = list(res["aioli"])
        swept = [e for e in envs_ if res["aioli"][e].get("noise_sweep")]
        ncol = 1 + len(swept)
        fig = _fig(figsize=(5.2 * ncol, 3.9))
        ax = fig.add_subplot(1, ncol, 1)
        for j, e in enumerate(envs_):
            s = np.asarray(res["aioli"][e]["eta"]["0.2"]["sim_per_round"])
            r = np.arange(1, s.shape[1] + 1)
            ax.plot(r, np.nanmean(s, 0), "o-", color=f"C{j}", ms=3, label=f"{e}: sim(Ā, A*)")
            ax.fill_between(r, np.nanpercentile(s, 10, 0), np.nanpercentile(s, 90, 0), color=f"C{j}", alpha=0.2)
        ax.set_xlabel("round t")
        ax.set_ylabel("sim = 0.5 cos + 0.5 Spearman")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title("Aioli's estimated A vs the true A\n(η = 0.2; mean, 10-90 % over seeds)", fontsize=9)
        ax.legend(fontsize=8)
        for i, e in enumerate(swept):
            ax = fig.add_subplot(1, ncol, 2 + i)
            for j, (hn, v) in enumerate(res["aioli"][e]["noise_sweep"].items()):
                ax.plot(v["sim_seed_mean"], v["improvement"], "o", ms=4, color=f"C{j + 2}",
                        label=f"held-out noise {hn}")
            ax.set_title(f"{e}, Aioli η = 0.2 across held-out noise levels\n"
                         f"(Fig. 3's axes; R² = {res['aioli'][e]['noise_sweep_r2']:.2f})", fontsize=9)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xlabel("mean sim over rounds (one dot per seed)")
            ax.set_ylabel("balanced minus Aioli (uniform mean final loss)")
            ax.legend(fontsize=7)
        _save(fig, figdir / "simulator_aioli_a.png")

        fig = _fig(figsize=(5.5 * len(envs_), 7.0))
        for j, e in enumerate(envs_):
            ax = fig.add_subplot(2, len(envs_), j + 1)
            etas = list(res["aioli"][e]["eta"])
            m = [res["aioli"][e]["eta"][k]["vs_balanced"]["mean"] for k in etas]
            hw = [res["aioli"][e]["eta"][k]["vs_balanced"]["hw"] for k in etas]
            ax.errorbar(np.arange(len(etas)), m, yerr=hw, fmt="o-", ms=4, capsize=2, color=f"C{j}")
            ax.set_xticks(np.arange(len(etas)), etas)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xlabel("η")
            ax.set_ylabel("Aioli minus balanced")
            ax.set_title(f"{e}: η sweep (uniform mean final loss; mean, 95 % interval)", fontsize=9)
            ax = fig.add_subplot(2, len(envs_), len(envs_) + j + 1)
            rr = res["aioli"][e]["restricted"]["rows"]
            rows = list(rr)
            m = [rr[k]["vs_balanced"]["mean"] for k in rows]
            hw = [rr[k]["vs_balanced"]["hw"] for k in rows]
            ax.errorbar(m, np.arange(len(rows)), xerr=hw, fmt="o", ms=4, capsize=2, color=f"C{j}")
            ax.set_yticks(np.arange(len(rows)), rows, fontsize=8)
            ax.invert_yaxis()
            ax.axvline(0, color="k", lw=0.8)
            ax.set_xlabel("minus balanced (uniform mean final loss)")
            ax.set_title(f"{e}: restricted setting (Aioli Table 3)", fontsize=9)
        _save(fig, figdir / "simulator_aioli_eta_restricted.png")


# ---------------------------------------------------------------------------------------------
# Markdown tables (printed; docs/results.md quotes them)
# ---------------------------------------------------------------------------------------------

def _ci(x):
    return f"{x['mean']:+.4f} ± {x['hw']:.4f}" if np.isfinite(x["hw"]) else f"{x['mean']:+.4f}"


def tables(res) -> str:
    out = []
    for e, v in res.get("ado", {}).items():
        out += [f"\n**{e}** — final true loss, mean over seeds; paired difference to balanced (same seed) ± 95 % "
                "t half-width; ADO's last fits\n",
                "| arm | prior | uniform mean | − balanced | natural-weighted | − balanced | − natural (nat.-w.) "
                "| final weights | fits on a bound | in-sample err |", "|" + "---|" * 10]
        for a, x in v["arms"].items():
            dg = x.get("diag")
            w = x.get("weights", x.get("final_weights"))
            out.append(f"| {a} | {x['prior']} | {np.mean(x['uniform']):.4f} | {_ci(x['vs_balanced']['uniform'])} | "
                       f"{np.mean(x['natural']):.4f} | {_ci(x['vs_balanced']['natural'])} | "
                       f"{_ci(x['vs_natural']['natural'])} | {' / '.join(f'{q:.2f}' for q in w)} | "
                       + (f"{dg['on_bound_share']:.0%} | {dg['err_mean']:.3f} |" if dg else "– | – |"))
    for e, v in res.get("forecast", {}).items():
        out += [f"\n**{e}** — forecasts of fits at 25 / 50 / 75 % of training vs the realised true loss\n",
                "| run | fit at | mean \\|log error\\| over the rest | \\|log error\\| at the end "
                "| share of (seed, domain) forecasts above the final loss | fits on a bound | in-sample err |",
                "|" + "---|" * 7]
        for lab, x in v.items():
            for f, sm in x["summary"].items():
                out.append(f"| {lab} | {float(f):.0%} | {sm['mean_abs_log_err']:.4f} | "
                           f"{sm['final_abs_log_err']:.4f} | {sm['share_overestimate_final']:.0%} | "
                           f"{sm['share_on_bound']:.0%} | {sm['in_sample_err']:.3f} |")
    for e, v in res.get("aioli", {}).items():
        out += [f"\n**{e}** — Aioli vs balanced (uniform mean final loss), sim(Ā, A*) over rounds\n",
                "| arm | − balanced | mean sim | relative error of A (raw) |", "|---|---|---|---|"]
        for k, x in v["eta"].items():
            out.append(f"| Aioli η = {k} | {_ci(x['vs_balanced'])} | {x['sim_mean']:.3f} | "
                       f"{np.mean(x['rel_err_per_round']):.2f} |")
        for k, x in v.get("noise_sweep", {}).items():
            out.append(f"| Aioli η = 0.2, held-out noise {k} | {_ci(x['vs_balanced'])} | {x['sim_mean']:.3f} | |")
        if "noise_sweep_r2" in v:
            out.append(f"\nR² of improvement on sim across the noise sweep (one point per seed and level): "
                       f"{v['noise_sweep_r2']:.2f}")
        rs = v["restricted"]
        out += ["", "| restricted setting | − balanced |", "|---|---|"]
        out += [f"| {k} | {_ci(x['vs_balanced'])} |" for k, x in rs["rows"].items()]
        out.append(f"| Aioli+GS − GS (paired) | {_ci(rs['aioli_gs_minus_gs'])} ({rs['aioli_gs_wins']} of "
                   f"{rs['aioli_gs_minus_gs']['n']} seeds better) |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["ado", "forecast", "aioli"], choices=["ado", "forecast", "aioli"])
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--force", action="store_true", help="rerun parts already in the results file")
    ap.add_argument("--quick", action="store_true", help="600 steps, 3 seeds, results and figures under /tmp")
    ap.add_argument("--figures-only", action="store_true")
    ap.add_argument("--out", default=None, help="results file (default experiments/simulator/results.json)")
    args = ap.parse_args()
    steps, seeds = (600, 3) if args.quick else (args.steps, args.seeds)
    tmp = Path(tempfile.gettempdir()) / "simulator_quick"
    out = Path(args.out) if args.out else (tmp / "results.json" if args.quick else HERE / "results.json")
    figdir = tmp if args.quick else FIGS
    jax.config.update("jax_compilation_cache_dir", os.environ.get("ADO_JAX_SIM_CACHE", "/tmp/ado_jax_sim_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    res = json.loads(out.read_text()) if out.exists() else {}
    if args.figures_only:
        figures(res, figdir)
        print(tables(res))
        return
    settings = {"steps": steps, "seeds": seeds, "batch_size": BATCH}
    if res.get("meta", {}).get("settings") != settings:
        res = {}
    env_table = envs()
    res["meta"] = {"settings": settings, "jax": jax.__version__, "backend": jax.default_backend(),
                   "platform": platform.platform(), "cpu_count": os.cpu_count(),
                   "envs": {k: v[2] for k, v in env_table.items()}, "ado_kwargs": ado_kwargs(steps),
                   "aioli": {**AIOLI, "etas": list(ETAS), "heldout_noises": list(HELDOUT_NOISES)},
                   "wall_s": res.get("meta", {}).get("wall_s", {})}
    t0 = time.perf_counter()
    plan = {"ado": ["power3", "power5"], "forecast": ["power3", "power5"], "aioli": ["linear3", "power3"]}
    for part in args.parts:
        if part in res and not args.force:
            print(f"{part}: already in {out} (use --force to rerun)")
            continue
        t_part = time.perf_counter()
        res[part] = {}
        for name in plan[part]:
            env, sizes, _ = env_table[name]
            if part == "ado":
                res[part][name] = part_ado(name, env, sizes, steps, seeds, t0)
            elif part == "forecast":
                res[part][name] = part_forecast(name, env, sizes, steps, seeds, t0)
            else:
                res[part][name] = part_aioli(name, env, sizes, steps, seeds, t0, noise_sweep=True)
        res["meta"]["wall_s"][part] = round(time.perf_counter() - t_part, 1)
        _write_json(out, res)
        _log(f"{part} done, saved {out}", t0)
    figures(res, figdir)
    print(tables(res))


if __name__ == "__main__":
    sys.exit(main())
