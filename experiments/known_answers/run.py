"""Known-answer suites: every mixer scored against the mixture known to be best.

    python experiments/known_answers/run.py --suite noise [--seeds 0 1 2 3 4] [--arms ...] [--steps 600]

Protocol, fixed before the first run (docs/results.md, "Known answers", states the same):

- Data: ``ado-jax corpus known --suite SUITE`` (``ado_jax.data.known_suites``): the real domains
  computing, dictionary, scripture (1 MB of train text each) + the special domain: ``noise``
  (random printable characters, 1 MB), ``memorize`` (one 11 KB document repeated to 1 MB, held
  out = the same text) or ``target`` (``scarce``: 4 % of the train bytes, the score).
- Model and budget: the ``tiny`` preset (Llama d_model 64, 2 layers, 0.12 M parameters, byte
  tokens), batch 16 x 64 tokens, ``--steps`` 600 (614 k tokens), cosine decay over the run, an
  evaluation (4 held-out batches per domain) every 100 steps. Seeds 0-4 score every arm (paired
  by seed: the same initialization and data draws); seeds 100-102 only choose ``scarce``'s best
  static mixture.
- Arms: stratified (= ``balanced``), natural (sizes; equal to stratified for noise and
  memorize), ADO with the natural and the uniform prior (refits every 40 steps from step 120;
  history from step 60, when the noise domain's unigram transient is over, every 2nd step, 128
  slots: the demo preset's schedule scaled to 600 steps), Aioli (defaults; ``fit=auto`` sizes it
  to 18 rounds x 1 sweep), DoReMi (defaults; its reference, a ``balanced`` run of the same size,
  trained first), ODM, Skill-It (graph estimated in the run), DoGE (defaults), and the known-best
  static mixture.
- Scores, at the last evaluation: ``noise`` and ``memorize``: the mean held-out loss over the 3
  real domains; ``scarce``: the target's held-out loss. Known best: ``noise``, ``memorize``:
  stratified over the real domains, 0 on the special one; ``scarce``: the best of the target
  weights {0.04, 0.1, 0.2, 0.3, 0.45} (the rest split evenly) on seeds 100-102.
- Reported per mixer: the share of the gap closed, (L_stratified - L_mixer) / (L_stratified -
  L_best), the paired mean difference over seeds divided by the mean gap, with the paired 95 %
  interval of the numerator scaled the same way; and the special domain's weight over training
  ("at mid-run": its mean over steps 240-360, the share of the data it got there).

Expected behaviour, written before running (checked in docs/results.md):
- ``noise``: ADO (both priors), Aioli and DoReMi put less than half the stratified share
  (0.125) on the noise domain by mid-run (step 300, mean over seeds). ODM's reward is the
  smoothed training loss, highest on noise (~4.6 nats against ~3): its EXP3 should feed noise,
  above 0.25. Skill-It's graph is estimated in steps 1-60, while noise is still learning its
  unigram distribution (5.5 -> 4.6 nats): its column for noise should look useful, so Skill-It
  is predicted to over-weight noise. DoGE: noise's gradient aligns with nobody's after the
  transient: predicted below 0.25.

Offline arms (issue 28; added after the runs above, fixed here before they ran): one ``ado-jax
sweep`` per suite, 16 proxies of the same model and steps with RegMix's sampler (seed 0), trained
from ``train.seed`` 100 (not a scoring seed); ``ado-jax fit-mixture`` fits DML ("dml") and RegMix's
LightGBM regression ("regmix") to the suite's score (``--target domains:<the 3 real domains>``, or
``domain:target`` for ``scarce``) on the proxies' final held-out losses, and each arm trains the
predicted mixture as a static run on the scoring seeds. Expected: both put little weight on
``noise`` and ``memorize`` (the proxies that gave them weight scored worse), and on ``scarce``
more than the natural 4 % on the target. The sweep adds about 15 min per suite.

DoGE, redone: every DoGE run before commit "train: per-domain gradients by lax.map" trained on
a wrong gradient (``jax.vmap`` over the vjp's cotangent rows gave a wrong batch-mean gradient at
the [16, 64] batch shape), so all its rows were dropped and rerun with the fixed step, with the
absent-domain fix (``mixer.absent=last``) and the paper's raw scores as the default (decided
before the rerun). Arms, fixed before they ran: ``doge`` (the proxy run, scored as an online
mixer), ``doge_reference`` (the DoGE code's normalized, clipped scores) and ``doge_final``
(DoGE's own protocol: the final run trains on the proxy's averaged weights ᾱ,
``mixer.weights_from=`` the same seed's ``doge`` run, as a static mixture).

Results merge into ``results.json`` beside this file (rewritten atomically after every run;
finished runs are skipped, so a rerun resumes); the figure goes to
``docs/figures/known_answers_<suite>.png``. Time, measured: 25-90 s per 600-step run on 2 CPU cores
(DoReMi twice that: its reference run; a DoGE proxy ~80 s); the whole ``scarce`` suite (grid, sweep,
14 arms x 5 seeds) took 50 min on a quiet machine, and the three DoGE arms 12.5 min per suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIGURES = os.path.join(ROOT, "docs", "figures")
ADO = ["mixer.fit_start=120", "mixer.fit_every=40", "mixer.skip_first=60", "mixer.subsample_every=2",
       "mixer.history_len=128"]
ARMS = {  # label -> (mixer, settings); order = table order
    "stratified": ("balanced", []),
    "natural": ("natural", []),
    "ado": ("ado", ADO),
    "ado_uniform": ("ado", [*ADO, "mixer.prior=uniform"]),
    "aioli": ("aioli", []),
    "doremi": ("doremi", []),
    "odm": ("odm", []),
    "skill_it": ("skill_it", []),
    "doge": ("doge", []),
    "doge_reference": ("doge", ["mixer.variant=reference"]),
    "doge_final": ("static", []),  # weights: the same seed's doge run's doge_avg_weights (PROXY)
    "dml": ("static", []),  # weights: fitted from the suite's sweep (offline_weights)
    "regmix": ("static", []),
    "best_static": ("static", []),  # weights per suite: best_weights()
}
OFFLINE = {"dml": "dml", "regmix": "regmix-lgbm"}  # arm -> ado-jax fit-mixture --method
PROXY = {"doge_final": "doge"}  # arm -> the arm whose run is its proxy (DoGE's final run: static ᾱ)
SWEEP = {"num": 16, "seed": 0, "train_seed": 100}  # the offline arms' proxies: not a scoring seed
SPECIAL = {"noise": "noise", "memorize": "memorize", "scarce": "target"}
SCARCE_GRID = (0.04, 0.1, 0.2, 0.3, 0.45)
SELECT_SEEDS = (100, 101, 102)


def _names(suite_dir: str) -> list[str]:
    return json.load(open(os.path.join(suite_dir, "manifest.json")))["names"]


def static_weights(suite_dir: str, special: str, w_special: float) -> list[float]:
    """Weights in the corpus's domain order: ``w_special`` on the special domain, the rest even."""
    names = _names(suite_dir)
    return [w_special if n == special else (1 - w_special) / (len(names) - 1) for n in names]


def final_eval(run_dir: str) -> dict | None:
    """The last evaluation record of a run, or None."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    evals = [r for r in map(json.loads, filter(str.strip, open(path))) if "eval_loss" in r]
    return evals[-1] if evals else None


def score(rec: dict, suite: str) -> float:
    """The suite's score of an evaluation record (lower is better)."""
    if suite == "scarce":
        return rec["eval_loss"]["target"]
    real = [v for k, v in rec["eval_loss"].items() if k != SPECIAL[suite]]
    return sum(real) / len(real)


def weight_series(run_dir: str, special: str) -> tuple[list[int], list[float]]:
    """(steps, the special domain's mixture weight) as logged by the run."""
    rows = [r for r in map(json.loads, filter(str.strip, open(os.path.join(run_dir, "metrics.jsonl"))))
            if "weights" in r]
    return [r["step"] for r in rows], [r["weights"][special] for r in rows]


def train(suite_dir: str, run_dir: str, mixer: str, sets: list[str], seed: int, steps: int) -> None:
    sets = [f"train.seed={seed}", f"train.steps={steps}", f"train.decay_steps={steps}", "train.eval_every=100",
            "train.eval_batches=4", "train.log_every=10", "train.progress=false", "data.source=corpus",
            f"data.corpus_dir={suite_dir}", "model.vocab_size=0", *sets]
    cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", "tiny", "--mixer", mixer, "--run-dir", run_dir]
    cmd += sum([["--set", s] for s in sets], [])
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, choices=list(SPECIAL))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="scoring seeds (train.seed)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM")
    p.add_argument("--steps", type=int, default=600, help="steps per run (the ADO schedule above assumes 600)")
    p.add_argument("--runs", default=os.path.join(HERE, "runs"), help="where run directories and suites go")
    p.add_argument("--source", default=None, help="built corpus with computing, dictionary, scripture, legal "
                                                  "(default: the built-in one)")
    args = p.parse_args()
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.runs, "xla_cache"))  # same shapes, one compile
    suite_dir = os.path.join(args.runs, f"suite_{args.suite}")
    if not os.path.exists(os.path.join(suite_dir, "manifest.json")):
        cmd = [sys.executable, "-m", "ado_jax.cli", "corpus", "known", "--suite", args.suite, "--out", suite_dir]
        subprocess.run(cmd + (["--from", args.source] if args.source else []), check=True, cwd=ROOT)
    special = SPECIAL[args.suite]
    out = os.path.join(HERE, "results.json")
    results = json.load(open(out)) if os.path.exists(out) else {}
    res = results.setdefault(args.suite, {"steps": args.steps, "runs": {}, "selection": {}})

    def save():
        with open(out + ".tmp", "w") as f:  # after every run, atomically
            json.dump(results, f, indent=1)
        os.replace(out + ".tmp", out)

    def run(key, mixer, sets, seed, store):
        run_dir = os.path.join(args.runs, args.suite, key)
        if key in store and store[key]["step"] == args.steps:
            return
        train(suite_dir, run_dir, mixer, sets, seed, args.steps)
        rec = final_eval(run_dir)
        store[key] = {"seed": seed, "step": rec["step"], "score": score(rec, args.suite), "eval_loss": rec["eval_loss"]}
        save()

    if args.suite == "scarce" and "best_static" in args.arms:  # choose the target weight on other seeds
        for w in SCARCE_GRID:
            for seed in SELECT_SEEDS:
                weights = json.dumps(static_weights(suite_dir, special, w))
                run(f"grid{w}_s{seed}", "static", [f"mixer.weights={weights}"], seed, res["selection"])
    best_w = best_weight(res, args.suite)
    for seed in args.seeds:
        for arm in args.arms:
            mixer, sets = ARMS[arm]
            if arm == "best_static":
                sets = [f"mixer.weights={json.dumps(static_weights(suite_dir, special, best_w))}"]
            elif arm in PROXY:  # the proxy arm comes earlier in ARMS, so its run of this seed is done
                proxy_dir = os.path.join(args.runs, args.suite, f"{PROXY[arm]}_s{seed}")
                sets = [f"mixer.weights_from={proxy_dir}"]
            elif arm in OFFLINE:
                sets = [f"mixer.weights_from={offline_weights(args.runs, args.suite, suite_dir, arm, args.steps)}"]
            run(f"{arm}_s{seed}", mixer, sets, seed, res["runs"])
            res["runs"][f"{arm}_s{seed}"]["arm"] = arm
            run_dir = os.path.join(args.runs, args.suite, f"{arm}_s{seed}")
            res["runs"][f"{arm}_s{seed}"]["weight_mid"] = _weight_at(run_dir, special, args.steps // 2)
        save()
    print(table(res, args.suite))
    arms_run = [a for a in ARMS if any(r.get("arm") == a for r in res["runs"].values())]  # all, not just --arms
    plot_weights(os.path.join(args.runs, args.suite), args.suite, arms_run, args.seeds,
                 os.path.join(FIGURES, f"known_answers_{args.suite}.png"))


def offline_weights(runs: str, suite: str, suite_dir: str, arm: str, steps: int) -> str:
    """The weights file of an offline arm: the suite's sweep (run once, resumable), then
    ``ado-jax fit-mixture`` with the arm's method for the suite's score."""
    sweep_dir = os.path.join(runs, suite, "sweep")
    if not os.path.exists(os.path.join(sweep_dir, "results.json")):
        sets = [f"train.seed={SWEEP['train_seed']}", f"train.steps={steps}", f"train.decay_steps={steps}",
                "train.eval_batches=4", "train.progress=false", "data.source=corpus", f"data.corpus_dir={suite_dir}",
                "model.vocab_size=0"]
        cmd = [sys.executable, "-m", "ado_jax.cli", "sweep", "--config", "tiny", "--sweep-dir", sweep_dir,
               "--sampler", "regmix", "--num", str(SWEEP["num"]), "--seed", str(SWEEP["seed"])]
        cmd += sum([["--set", x] for x in sets], [])
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    special = SPECIAL[suite]
    target = f"domain:{special}" if suite == "scarce" else \
        "domains:" + ",".join(n for n in _names(suite_dir) if n != special)
    out = os.path.join(runs, suite, f"{arm}_weights.json")
    if os.path.exists(out):
        return out
    cmd = [sys.executable, "-m", "ado_jax.cli", "fit-mixture", os.path.join(sweep_dir, "results.json"),
           "--method", OFFLINE[arm], "--target", target, "--out", out]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def best_weight(res: dict, suite: str) -> float:
    """The special domain's weight in the known-best static mixture (scarce: the grid's best on
    the selection seeds; otherwise 0)."""
    if suite != "scarce":
        return 0.0
    import statistics

    means = {w: statistics.mean(res["selection"][f"grid{w}_s{s}"]["score"] for s in SELECT_SEEDS) for w in SCARCE_GRID}
    return min(means, key=means.get)


def _weight_at(run_dir: str, special: str, step: int) -> float:
    """The special domain's mean weight over steps ``0.8 step .. 1.2 step`` (the share of the
    data it got there: Aioli's LEARNPARAMS steps included, which a single step would miss or hit)."""
    steps, ws = weight_series(run_dir, special)
    window = [w for s, w in zip(steps, ws) if 0.8 * step <= s <= 1.2 * step]
    return sum(window) / len(window)


def gap_closed(res: dict, arm: str) -> tuple[float, float, float, int]:
    """(share of the gap closed, its 95 % interval low, high, seeds), paired by seed."""
    from ado_jax.eval_metrics import paired_interval

    runs = res["runs"]
    seeds = sorted(r["seed"] for r in runs.values() if r.get("arm") == "stratified")
    pairs = [(runs[f"stratified_s{s}"]["score"], runs[f"{arm}_s{s}"]["score"], runs[f"best_static_s{s}"]["score"])
             for s in seeds if f"{arm}_s{s}" in runs and f"best_static_s{s}" in runs]
    gap = sum(st - b for st, _, b in pairs) / len(pairs)
    mean, half, n = paired_interval([st - m for st, m, _ in pairs])
    return mean / gap, (mean - half) / gap, (mean + half) / gap, n


def table(res: dict, suite: str) -> str:
    """Markdown: per arm the mean score, the gap closed with its interval, the mid-run weight."""
    import statistics

    lines = ["| arm | seeds | score (mean) | gap closed [95 % interval] | special weight at mid-run |",
             "|---|---|---|---|---|"]
    for arm in ARMS:
        rs = [r for r in res["runs"].values() if r.get("arm") == arm]
        if not rs:
            continue
        g, lo, hi, _ = gap_closed(res, arm) if arm not in ("stratified", "best_static") else (None,) * 4
        cell = f"{g:+.2f} [{lo:+.2f}, {hi:+.2f}]" if g is not None else ("0 (by definition)" if arm == "stratified"
                                                                          else "1 (by definition)")
        lines.append(f"| {arm} | {len(rs)} | {statistics.mean(r['score'] for r in rs):.4f} | {cell} | "
                     f"{statistics.mean(r['weight_mid'] for r in rs):.3f} |")
    return "\n".join(lines)


def plot_weights(runs: str, suite: str, arms: list[str], seeds: list[int], path: str) -> None:
    """The special domain's weight over training per arm (mean over seeds, band = min-max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = plt.get_cmap("tab20").colors  # 14 arms: tab10 would repeat colours
    for i, arm in enumerate(arms):
        series = [weight_series(os.path.join(runs, f"{arm}_s{s}"), SPECIAL[suite]) for s in seeds
                  if os.path.exists(os.path.join(runs, f"{arm}_s{s}", "metrics.jsonl"))]
        if not series:
            continue
        n = min(len(s[0]) for s in series)
        w = np.array([s[1][:n] for s in series])
        fixed = ARMS[arm][0] in ("static", "balanced", "natural")  # dashed: a mixture that does not move
        ax.plot(series[0][0][:n], w.mean(0), label=arm, color=colors[i % len(colors)], ls="--" if fixed else "-")
        ax.fill_between(series[0][0][:n], w.min(0), w.max(0), alpha=0.15, color=colors[i % len(colors)])
    ax.axhline(0.25, color="k", lw=0.6, ls=":")
    ax.axhline(0.125, color="k", lw=0.6, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel(f"weight on {SPECIAL[suite]}")
    ax.set_title(f"suite '{suite}': weight on the special domain (mean of the seeds, band min-max;\n"
                 "thin dotted: the stratified share, thin dashed: half of it; dashed lines: fixed mixtures)",
                 fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


if __name__ == "__main__":
    main()
