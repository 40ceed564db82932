"""Both papers' hyperparameters on real text, with two domains held out as the out-of-distribution target.

    python experiments/paper_settings/run.py [--seeds 0 1 2] [--arms ado aioli ...] [--steps 2500]

Setting (``config.json`` beside this file): the built-in corpus, its 8 domains split *before any
run* into 3 training groups, as in the Aioli paper's settings of 2-7 groups — ``tech`` (code +
manpages), ``reference`` (computing + dictionary), ``long`` (legal + scripture) — and 2
evaluation-only domains (``python_docs``, ``fortunes``), never trained on and never shown to the
mixer: the stand-in for the out-of-distribution validation sets (SlimPajama, FineWeb) of the ADO
paper. A 0.21 M-parameter Llama (d_model 64, 4 layers, byte tokens) trains 2,500 steps x 16 x 64
tokens per arm (2.6 M tokens), so that

- Aioli runs the paper's schedule: T = 20 rounds, k = 4 sweeps, delta = 0.288 (its value for
  3 groups), eps = 0.75, eta = 0.2 ("Aioli: A Unified Optimization Framework for Language Model
  Data Mixing", arXiv:2411.05735);
- ADO refits 20 times (first fit at step 250, then every 115 steps; history from step 100, every
  5th step), otherwise the paper's defaults ("Adaptive Data Optimization: Dynamic Sample
  Selection with Scaling Laws", arXiv:2410.11820), with the natural prior and, as an ablation,
  the uniform one.

Arms: stratified (balanced), natural, ADO, Aioli, and the Aioli paper's other baselines (issue 28,
added and fixed here before their runs): DoGE's proxy run (``doge``, eta 0.01 as in the Aioli
paper's Table 12) and its final run on the proxy's averaged weights (``doge_final``, the protocol
of DoGE and of Aioli's Table 2: one extra run); DML and RegMix fitted from one sweep, Aioli's
offline budget of 10 full-length runs: ``ado-jax sweep --sampler grid --resolution 3`` (the 10
mixtures of the 1/3 simplex grid of the 3 groups, trained side by side, train.seed 100, not a
scoring seed), ``ado-jax fit-mixture --target uniform`` (Aioli's objective: the mean over the
groups) with ``dml`` and ``regmix-linear`` (LightGBM, RegMix's other regression, cannot fit 10
points: the known-answer suites showed it already at 16), each trained as a static run. Seeds 0-2
(model initialization and data draws; a seed is shared by every arm, so arms are paired by seed).
``ado_uniform`` (ADO with the uniform prior) is an optional arm (``--arms ado_uniform``).
Nothing is tuned: the settings above were fixed before the first run, and the evaluation-only
domains were chosen a priori as the two domains whose kind of text is not a training group. (The
sweep's proxies are scored on the same held-out split as the arms: the papers fit on validation
and report test; this corpus has one held-out split.)
Scores, at the last evaluation: per-domain held-out loss, the uniform mean and the average
per-domain perplexity over the 3 groups (Aioli's metric), the natural-weighted mean (ADO's
Pile-validation metric) and the mean over the 2 evaluation-only domains (ADO's OOD claim); and
the harness accuracies of each run on offline tasks built from the evaluation-only domains'
held-out text (``ado-jax corpus tasks``: multiple-choice endings and last words; ADO's Table 1
tasks need the Hugging Face hub, out of this machine's reach).

Results merge into ``results.json`` (rewritten atomically after every job; finished jobs are
skipped, so a rerun resumes); tables go to stdout, figures to ``docs/figures/paper_settings_*.png``.
Time, measured with ``--workers 2`` on 2 CPU cores: 5-8 min per run (two at once), the sweep 48
min beside them; the 24 runs and the sweep behind docs/results.md took 100 min, the 24 harness
evaluations about 6 min more.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIGURES = os.path.join(ROOT, "docs", "figures")
ADO = ["mixer.fit_start=250", "mixer.fit_every=115", "mixer.skip_first=100", "mixer.subsample_every=5",
       "mixer.history_len=128"]
# label -> (mixer, settings); order = table order
ARMS = {
    "stratified": ("balanced", []),
    "natural": ("natural", []),
    "ado": ("ado", ADO),
    "ado_uniform": ("ado", [*ADO, "mixer.prior=uniform"]),
    "aioli": ("aioli", ["mixer.rounds=20", "mixer.sweeps=4", "mixer.delta=0.288"]),
    "doge": ("doge", []),  # DoGE's proxy run (Aioli Table 12: eta 0.01, our default)
    "doge_final": ("static", []),  # DoGE's final run: the same seed's doge run's averaged weights
    "dml": ("static", []),  # the mixture DML predicts from the sweep
    "regmix": ("static", []),  # the mixture RegMix's linear regression predicts from the sweep
}
DEFAULT_ARMS = [a for a in ARMS if a != "ado_uniform"]
PROXY = {"doge_final": "doge"}  # arm -> the arm whose run gives its weights (mixer.weights_from=RUN)
OFFLINE = {"dml": "dml", "regmix": "regmix-linear"}  # arm -> ado-jax fit-mixture --method
SWEEP = {"sampler": "grid", "resolution": 3, "train_seed": 100}  # 10 mixtures: Aioli's 10 full runs
AGGREGATES = ("eval_loss_mean", "eval_ppl_mean", "eval_loss_natural", "eval_loss_ood")
EVAL_ONLY = ("python_docs", "fortunes")  # config.json's data.eval_only_domains
# harness columns: (label, task, metric); accuracy, higher is better
HARNESS = tuple((f"{kind}_{d}", f"heldout_{kind}_{d}", "acc") for kind in ("choice", "lastword") for d in EVAL_ONLY)


def final_eval(run_dir: str) -> dict | None:
    """The last evaluation record of a finished run, or None."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = [json.loads(ln) for ln in open(path) if ln.strip()]
    evals = [r for r in rows if "eval_loss" in r]
    return evals[-1] if evals else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values")
    p.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS), metavar="ARM")
    p.add_argument("--steps", type=int, default=2500, help="steps per run (the schedules above assume 2500)")
    p.add_argument("--runs", default=os.path.join(HERE, "runs"), help="where run directories go")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once (2 on 2 CPU cores: 1.33x the throughput of 1, measured)")
    p.add_argument("--no-harness", dest="harness", action="store_false",
                   help="skip the harness evaluation of each run on the offline held-out tasks (HARNESS_TASKS)")
    p.add_argument("--out", default=os.path.join(HERE, "results.json"), help="the results file (merged, resumed)")
    args = p.parse_args()
    out = args.out
    results = json.load(open(out))["runs"] if os.path.exists(out) else {}
    # Jobs in table order, seed by seed; a job starts once the jobs it reads from are done.
    jobs = {f"{arm}_s{seed}": (arm, seed) for seed in args.seeds for arm in args.arms}
    needs = {key: ({"sweep"} if arm in OFFLINE else {f"{PROXY[arm]}_s{seed}"} if arm in PROXY else set())
             for key, (arm, seed) in jobs.items()}
    if any(needs.values()):
        jobs = {"sweep": ("sweep", None), **jobs}
        needs["sweep"] = set()
    runs = [k for k in jobs if k != "sweep"]
    if args.harness:  # each run's harness evaluation: a job of its own once the run is done
        jobs.update({f"harness:{k}": ("harness", k) for k in runs})
        needs.update({f"harness:{k}": {k} for k in runs})
    done = {k for k, r in results.items() if r["step"] == args.steps}
    done |= {"sweep"} if os.path.exists(os.path.join(args.runs, "sweep", "results.json")) else set()
    done |= {f"harness:{k}" for k, r in results.items() if "harness" in r}
    lock = threading.Lock()

    def save() -> None:  # under the lock; after every job, atomically
        with open(out + ".tmp", "w") as f:
            json.dump({"steps": args.steps, "runs": results}, f, indent=1)
        os.replace(out + ".tmp", out)

    def job(key: str) -> None:
        arm, seed = jobs[key]
        if arm == "sweep":
            return sweep(args.runs, args.steps)
        if arm == "harness":
            record = harness(args.runs, seed)
            with lock:
                results[seed]["harness"] = record
                save()
            return
        mixer, sets = ARMS[arm]
        run_dir = os.path.join(args.runs, key)
        if arm in PROXY:
            sets = [f"mixer.weights_from={os.path.join(args.runs, f'{PROXY[arm]}_s{seed}')}"]
        elif arm in OFFLINE:
            sets = [f"mixer.weights_from={offline_weights(args.runs, arm)}"]
        sets = [f"train.seed={seed}", f"train.steps={args.steps}", *sets]
        cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", os.path.join(HERE, "config.json"),
               "--mixer", mixer, "--run-dir", run_dir] + sum([["--set", s] for s in sets], [])
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        with lock:  # one writer
            results[key] = {"arm": arm, "seed": seed, **final_eval(run_dir)}
            save()

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        running: dict = {}
        while len(done) < len(jobs):
            for key in jobs:
                if len(running) < args.workers and key not in done and key not in running.values() \
                        and needs[key] <= done:
                    running[pool.submit(job, key)] = key
            if not running:
                raise SystemExit(f"nothing can start: {sorted(set(jobs) - done)} wait on runs not asked for")
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in finished:
                fut.result()  # a failed run stops the experiment (a rerun resumes it)
                done.add(running.pop(fut))
    print(tables(results))
    plot_paired(results, os.path.join(FIGURES, "paper_settings_vs_stratified.png"))
    if os.path.exists(os.path.join(args.runs, "ado_s0")):
        plot_ado(args.runs, os.path.join(FIGURES, "paper_settings_ado.png"))


def sweep(runs: str, steps: int) -> None:
    """The offline arms' sweep (Aioli's protocol for DML: 10 full-length runs over the simplex; here
    the 1/3-grid of the 3 groups, trained side by side by ``ado-jax sweep``, from train.seed 100, not
    a scoring seed). Resumable."""
    sets = [f"train.seed={SWEEP['train_seed']}", f"train.steps={steps}", "train.progress=false"]
    cmd = [sys.executable, "-m", "ado_jax.cli", "sweep", "--config", os.path.join(HERE, "config.json"),
           "--sweep-dir", os.path.join(runs, "sweep"), "--sampler", SWEEP["sampler"],
           "--resolution", str(SWEEP["resolution"])] + sum([["--set", x] for x in sets], [])
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def harness(runs: str, key: str) -> dict:
    """The harness record of run ``key``: ``ado-jax eval --harness`` on its last checkpoint with the
    offline tasks of the 2 evaluation-only domains (``ado-jax corpus tasks``, built once, seed 0:
    HellaSwag-style endings and LAMBADA-style last words of held-out text; ADO's Table 1 tasks
    need the hub, which this machine cannot reach)."""
    tasks_dir = os.path.join(runs, "heldout_tasks")
    names = _build_tasks(tasks_dir)
    run_dir = os.path.join(runs, key)
    cmd = [sys.executable, "-m", "ado_jax.cli", "eval", "--run-dir", run_dir, "--harness", names,
           "--harness-include-path", tasks_dir]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(ln) for ln in open(os.path.join(run_dir, "metrics.jsonl")) if ln.strip()]
    return [r for r in rows if "harness" in r][-1]["harness"]


TASKS_LOCK = threading.Lock()
TASKS: dict = {}  # tasks_dir -> the task names, built once per experiment process


def _build_tasks(tasks_dir: str) -> str:
    """``ado-jax corpus tasks`` for the evaluation-only domains, once per process (under a lock: the
    harness jobs run in threads); returns the task names, comma-separated."""
    with TASKS_LOCK:
        if tasks_dir not in TASKS:
            cmd = [sys.executable, "-m", "ado_jax.cli", "corpus", "tasks", "--corpus-dir",
                   os.path.join(ROOT, "data", "corpus"), "--domains", ",".join(EVAL_ONLY), "--out", tasks_dir]
            TASKS[tasks_dir] = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return TASKS[tasks_dir]


def offline_weights(runs: str, arm: str) -> str:
    """The weights file of an offline arm: ``ado-jax fit-mixture`` with the arm's method on the
    sweep's table, for Aioli's objective (the uniform mean over the 3 trained groups)."""
    out = os.path.join(runs, f"{arm}_weights.json")
    if not os.path.exists(out):
        cmd = [sys.executable, "-m", "ado_jax.cli", "fit-mixture", os.path.join(runs, "sweep", "results.json"),
               "--method", OFFLINE[arm], "--target", "uniform", "--out", out]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def value(rec: dict, metric: str) -> float | None:
    """An aggregate of a run's record, or a harness column's accuracy (``HARNESS`` label)."""
    for label, task, name in HARNESS:
        if metric == label:
            return rec.get("harness", {}).get(task, {}).get(name)
    return rec[metric]


def paired(results: dict, arm: str, base: str, metric: str):
    """(mean, 95 % half-width, n) of ``arm - base`` on ``metric`` over the seeds both have."""
    from ado_jax.eval_metrics import paired_interval

    seeds = sorted(r["seed"] for r in results.values() if r["arm"] == base)
    pairs = [(results[f"{arm}_s{s}"], results[f"{base}_s{s}"]) for s in seeds if f"{arm}_s{s}" in results]
    diffs = [value(a, metric) - value(b, metric) for a, b in pairs
             if value(a, metric) is not None and value(b, metric) is not None]
    return paired_interval(diffs)


def _table(results: dict, arms: list, metrics: list, digits: int) -> list[str]:
    """Mean per arm, then paired differences vs stratified and vs natural, of ``metrics``."""
    import statistics

    lines = ["| arm | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for a in arms:
        rs = [r for r in results.values() if r["arm"] == a]
        cells = []
        for m in metrics:
            vals = [value(r, m) for r in rs if value(r, m) is not None]
            cells.append(f"{statistics.mean(vals):.{digits}f}" if vals else "–")
        lines.append(f"| {a} | {len(rs)} | " + " | ".join(cells) + " |")
    for base in ("stratified", "natural"):
        lines += ["", f"Paired by seed, arm minus {base} (mean [95 % interval]):", "",
                  "| arm | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for a in arms:
            if a == base:
                continue
            cells = []
            for m in metrics:
                mean, half, n = paired(results, a, base, m)
                cells.append(f"{mean:+.{digits}f} [{mean - half:+.{digits}f}, {mean + half:+.{digits}f}]"
                             if n > 1 else "–")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def tables(results: dict) -> str:
    """Markdown: the aggregates (mean per arm, paired differences vs stratified and vs natural),
    then the same for the harness accuracies where the runs have them."""
    arms = [a for a in ARMS if any(r["arm"] == a for r in results.values())]
    lines = _table(results, arms, list(AGGREGATES), 4)
    if any("harness" in r for r in results.values()):
        lines += ["", "Harness accuracy on the evaluation-only domains' held-out text (offline tasks):", ""]
        lines += _table(results, arms, [label for label, _, _ in HARNESS], 3)
    return "\n".join(lines)


def plot_paired(results: dict, path: str) -> None:
    """Bars: each arm's paired difference vs stratified per aggregate, whiskers the 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARMS if a != "stratified" and any(r["arm"] == a for r in results.values())]
    fig, axes = plt.subplots(1, len(AGGREGATES), figsize=(4.5 * len(AGGREGATES), 3.6))
    for ax, m in zip(axes, AGGREGATES):
        stats = [paired(results, a, "stratified", m) for a in arms]
        ax.bar(range(len(arms)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=4,
               color=[plt.cm.tab10(i) for i in range(len(arms))])
        # An arm far off the others' scale (RegMix's vertex mixture) would flatten every other bar:
        # the axis fits the rest and the far arm's value is written at the edge.
        spans = sorted(abs(mu) + half for mu, half, _ in stats)
        lim = 1.3 * (spans[-2] if len(spans) > 1 and spans[-1] > 5 * spans[-2] else spans[-1])
        ax.set_ylim(-lim, lim)
        for i, (mu, _, _) in enumerate(stats):
            if abs(mu) > lim:
                ax.text(i, 0.9 * lim * (1 if mu > 0 else -1), f"{mu:+.2f}\n(off scale)", ha="center",
                        va="top" if mu > 0 else "bottom", fontsize=8)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(arms)), arms, rotation=30)
        ax.set_title(m, fontsize=10)
    axes[0].set_ylabel("minus stratified (lower is better)")
    fig.suptitle("Paired by seed: difference to stratified, 95 % interval")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


def _series(run_dir: str, key: str):
    rows = [json.loads(ln) for ln in open(os.path.join(run_dir, "metrics.jsonl")) if ln.strip()]
    rows = [r for r in rows if key in r]
    return [r["step"] for r in rows], rows


def plot_ado(runs: str, path: str) -> None:
    """ADO's mechanics in seed 0 (ADO paper Figs. 5, 9-11): mixture weights, credit h, per-group
    slope of the fitted law, and its training loss against natural's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for ax, key, title in ((axes[0], "weights", "mixture weights"), (axes[1], "ado_h", "credit history h (EMA of pi)"),
                           (axes[2], "ado_slope", "fitted slope -dL/dn")):
        steps, rows = _series(os.path.join(runs, "ado_s0"), key)
        if not rows:
            ax.set_title(f"{title}: not logged")
            continue
        for name in rows[0][key]:
            ax.plot(steps, [r[key][name] for r in rows], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        if key == "ado_slope":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    for arm, color in (("ado", "tab:blue"), ("natural", "tab:gray")):
        run = os.path.join(runs, f"{arm}_s0")
        if os.path.exists(run):
            steps, rows = _series(run, "loss")
            loss = np.convolve([r["loss"] for r in rows], np.ones(20) / 20, mode="valid")
            axes[3].plot(steps[19:], loss, color=color, label=arm)
    axes[3].set_title("training loss (20-step mean)")
    axes[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


if __name__ == "__main__":
    main()
