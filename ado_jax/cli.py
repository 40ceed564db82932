"""The ``ado-jax`` command: ``train`` (or resume) a run, or a synthetic task with ``train --task``;
``sweep`` K proxy runs over mixtures side by side; ``eval`` a run's latest checkpoint on held-out
data (or on LM Evaluation Harness tasks: ``eval --harness``); ``plot`` a run's figures; ``compare`` the final
per-domain eval losses of several runs; ``export`` a checkpoint as a Hugging Face one; ``corpus
build`` the built-in corpus or ``corpus encode`` your own text folders.

Exit codes: 0 done (also after SIGTERM, with a checkpoint saved); 2 bad input, a busy run
directory, a refused config change, not enough memory or a file-system error (one line on
stderr); 3 a stuck run (too many skipped steps in a row; checkpoint saved); 130 Ctrl-C (the first
saves a checkpoint after the current step, a second aborts at once)."""

from __future__ import annotations

import argparse
import json
import sys

from ado_jax.config import describe, load_config


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="preset name (tiny, demo, gpt2-124m, 350m, 1b) or a JSON file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--run-dir", default="runs/default", help="run directory (local or gs://): metrics, checkpoints")


def _load(args) -> "object":
    overrides = list(args.overrides)
    if getattr(args, "steps", None) is not None:
        overrides.append(f"train.steps={args.steps}")
    if getattr(args, "mixer", None) is not None:
        overrides.append(f"mixer.name={args.mixer}")
    return load_config(args.config, overrides)


def cmd_train(args) -> int:
    """``ado-jax train``: trains (or resumes) the run in ``--run-dir``; returns the exit code."""
    from ado_jax import sharding

    sharding.maybe_initialize_distributed()  # before anything touches the XLA backend
    import jax

    from ado_jax import loop

    opts = loop.RunOptions(force=args.force, reset_mixer=args.reset_mixer, allow_change=args.allow_change,
                           break_lock=args.break_lock)
    cfg = _load(args)
    try:
        for pre_dir, pre_cfg in cfg.mixer.prerequisite_runs(cfg, args.run_dir):  # e.g. DoReMi's reference
            if jax.process_index() == 0:
                print(f"mixer {cfg.mixer.name}: first training {pre_dir} with mixer {pre_cfg.mixer.name} (its "
                      "reference run; resumes, and is not retrained once complete)", flush=True)
            loop.run(pre_cfg, pre_dir, opts)
        summary = loop.run(cfg, args.run_dir, opts)
    except loop.RunStopped as e:
        print(e, file=sys.stderr)
        return e.exit_code
    print(json.dumps(summary))
    return 0


def cmd_eval(args) -> int:
    """Evaluates the run's latest checkpoint on every domain's held-out split, or with
    ``--harness`` on LM Evaluation Harness tasks (``ado_jax.harness.run``); prints JSON."""
    if args.harness:
        from ado_jax.harness.run import evaluate_run

        print(json.dumps(evaluate_run(args.run_dir, args.harness, args.harness_include_path, args.limit, args.step,
                                      args.harness_batch_size, args.harness_dtype, _load(args).mesh)))
        return 0
    if any(v is not None for v in (args.harness_include_path, args.limit, args.step)):
        raise ValueError("--harness-include-path, --limit and --step apply to --harness evaluations only")
    import jax

    from ado_jax import checkpoint, loop, sharding, train
    from ado_jax.optimizer import make_optimizer
    from ado_jax.data import setup as data_setup

    if args.batches < 1:
        raise ValueError(f"--batches {args.batches}: must be at least 1 held-out batch per domain")
    cfg = data_setup.resolve_vocab_size(_load(args))
    ckpt = checkpoint.Checkpointer(f"{args.run_dir}/checkpoints")
    step = ckpt.latest_step()
    if step is None:
        raise SystemExit(f"error: no complete checkpoint in {args.run_dir}/checkpoints")
    mesh = sharding.make_mesh(cfg.mesh)
    loader, heldout = data_setup.train_loader(cfg, mesh), data_setup.heldout_stream(cfg, with_eval_only=True)
    mixer = loop.build_mixer(cfg, loader.names, loader.sizes(), args.run_dir)
    opt = make_optimizer(cfg.train)
    D = len(loader.names)
    # The state's shape, stream state included (a host loader's differs from an in-step stream's).
    abstract = jax.eval_shape(
        lambda k: train.init_state(cfg.model, opt, mixer, loader.init_state(k, mixer.init(D).weights), D, k),
        jax.random.PRNGKey(0))
    state, _ = ckpt.restore(abstract, train.state_shardings(abstract, mesh), step)
    rec = loop.eval_record(step, state.model, heldout.fixed_batches(args.batches), heldout.names,
                           dict(zip(loader.names, loader.sizes())), cfg.data.eval_only_domains)
    print(json.dumps(rec))
    return 0


def cmd_plot(args) -> int:
    """Writes a run's PNG figures (``ado_jax.plot``); prints their paths."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("ado-jax plot needs matplotlib: pip install 'ado_jax[plot]' (or pip install matplotlib)")
    from ado_jax.plot import plot_run

    for path in plot_run(args.run_dir, args.out):
        print(path)
    return 0


def cmd_compare(args) -> int:
    """Prints the comparison table of runs (``ado_jax.compare``)."""
    from ado_jax.compare import compare

    print(compare(args.run_dirs, as_json=args.json, against=args.against))
    return 0


def cmd_export(args) -> int:
    """Writes a run's checkpoint as a Hugging Face checkpoint folder (``ado_jax.hf_checkpoint``); prints JSON."""
    from ado_jax.hf_checkpoint import export_run

    print(json.dumps(export_run(args.run_dir, args.out, args.step, args.force)))
    return 0


def cmd_fit_mixture(args) -> int:
    """Fits DML or RegMix to a table of static-mixture runs; writes the weights JSON (``mixing.offline_fits``)."""
    from ado_jax.mixing.offline_fits import fit_main

    return fit_main(args)


def build_parser(field_help: bool = True) -> argparse.ArgumentParser:
    """The ``ado-jax`` argument parser: train, eval, corpus build|encode, plot, compare, export.

    ``field_help``: list every config field under ``train --help`` / ``eval --help`` (that
    imports the mixers, hence JAX; ``main`` asks for it only when help is requested).
    """
    parser = argparse.ArgumentParser(prog="ado-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter
    fields = describe() if field_help else None
    p = sub.add_parser("train", help="train (or resume) a run", epilog=fields, formatter_class=fmt)
    _config_args(p)
    p.add_argument("--steps", type=int, help="shortcut for --set train.steps=N (stop after N steps)")
    p.add_argument("--task", help="icl_regression|sparse_parity|facts: train a synthetic task (ado_jax.synthetic) "
                   "instead (its own flags: ado-jax train --task sparse_parity --help)")
    p.add_argument("--mixer", help="shortcut for --set mixer.name=NAME: "
                   "static|natural|balanced|ado|aioli|doremi|odm|skill_it")
    p.add_argument("--reset-mixer", action="store_true",
                   help="on resume, start a fresh mixer (its init) at the checkpoint's step, accepting a changed "
                        "mixer section; recorded in metrics.jsonl and config_history.jsonl")
    p.add_argument("--allow-change", action="store_true",
                   help="on resume, accept changed optimizer hyperparameters (train.lr, schedule, weight decay, "
                        "betas, clipping); recorded in config_history.jsonl")
    p.add_argument("--force", action="store_true", help="train even if the memory estimate exceeds the devices'")
    p.add_argument("--break-lock", action="store_true",
                   help="take over a gs:// run directory's lock left by a process that is gone")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("eval", help="per-domain held-out loss of a run's latest checkpoint",
                       epilog=fields, formatter_class=fmt)
    _config_args(p)
    p.add_argument("--batches", type=int, default=4, help="held-out batches per domain")
    p.add_argument("--harness", metavar="TASKS",
                   help="instead, LM Evaluation Harness tasks, comma-separated lm-eval names or the suite ado-table1 "
                        "(the ADO paper's seven); the run's checkpoint config is used, --config is not needed; "
                        "results are appended to RUN_DIR/metrics.jsonl [harness]")
    p.add_argument("--harness-include-path", metavar="DIR",
                   help="a folder of your own lm-eval task YAMLs (lm-eval's --include_path)")
    p.add_argument("--limit", type=int, help="--harness: at most N documents per task (a quick look, not a score)")
    p.add_argument("--step", type=int, help="--harness: the checkpoint's step (default: the latest)")
    p.add_argument("--harness-batch-size", type=int, default=32,
                   help="--harness: sequences per batch (long buckets get fewer: 65536 tokens at most)")
    p.add_argument("--harness-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="--harness: the model's compute dtype (float32: the scores of lm-eval's hf backend)")
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("plot", help="PNG figures of a run: weights, losses, ADO forecasts, Aioli's A")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="output folder (default RUN_DIR/plots)")
    p.set_defaults(fn=cmd_plot)
    p = sub.add_parser("compare", help="table of final per-domain eval losses of several runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a markdown table")
    p.add_argument("--against", nargs="+", metavar="RUN_DIR",
                   help="a second arm's runs: print RUN_DIRs minus these, paired by train.seed, with 95%% intervals")
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("export", help="write a run's checkpoint as a Hugging Face checkpoint folder",
                       description="Writes config.json, model.safetensors (float32) and the run's tokenizer (a BPE or "
                       "Hugging Face corpus tokenizer) into --out, which transformers' "
                       "AutoModelForCausalLM.from_pretrained loads: LlamaForCausalLM, or Qwen3ForCausalLM for a "
                       "model.qk_norm model. Needs only safetensors (pip install 'ado-jax[hf]').")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", choices=["hf"], default="hf", help="checkpoint format (only hf: Hugging Face)")
    p.add_argument("--out", required=True, help="output folder; written whole into a temporary sibling, then renamed")
    p.add_argument("--step", type=int, help="the checkpoint's step (default: the latest)")
    p.add_argument("--force", action="store_true", help="replace --out when it exists and is not empty")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("fit-mixture", help="fit DML or RegMix to a table of static-mixture runs and write the "
                       "predicted best mixture as a weights JSON (train it: --set mixer.weights_from=OUT)")
    p.add_argument("table", metavar="TABLE", help="run table, JSON or CSV (local or gs://): see docs/mixers.md")
    p.add_argument("--method", choices=["dml", "regmix-linear", "regmix-lgbm"], default="dml")
    p.add_argument("--target", default="uniform", help="uniform | natural | all | eval_only | domain:NAME | "
                   "domains:A,B,... (the mean over those domains)")
    p.add_argument("--out", required=True, help="the weights JSON to write (local or gs://)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and RegMix's candidates")
    p.set_defaults(fn=cmd_fit_mixture)
    from ado_jax.sweep import command as sweep_command

    p = sub.add_parser("sweep", help="train K proxy runs over static mixtures side by side (one vmapped step) and "
                       "write their results table (results.json/.csv) for fit-mixture",
                       description=sweep_command.__doc__, formatter_class=fmt)
    sweep_command.add_args(p)
    p.set_defaults(fn=sweep_command.sweep_main)

    from ado_jax.data import corpus_cli

    corpus = sub.add_parser("corpus", help="build the built-in multi-domain corpus, or encode your own text")
    csub = corpus.add_subparsers(dest="corpus_command", required=True)
    corpus_cli.add_build_args(csub.add_parser("build", help="build (or reuse) the built-in corpus")).set_defaults(
        fn=corpus_cli.corpus_build_main)
    corpus_cli.add_encode_args(csub.add_parser("encode", help="tokenize text folders (one per domain) or record "
                                                "files (JSONL, Parquet) into token files")
                               ).set_defaults(fn=corpus_cli.corpus_encode_main)
    corpus_cli.add_merge_args(csub.add_parser("merge", help="join encodes of disjoint input files")).set_defaults(
        fn=corpus_cli.corpus_merge_main)
    corpus_cli.add_upload_args(csub.add_parser("upload", help="copy a corpus to an object store (gs://...), each "
                                               "file checked against its hashes, the manifest last")
                               ).set_defaults(fn=corpus_cli.corpus_upload_main)
    corpus_cli.add_known_args(csub.add_parser("known", help="a known-answer suite: 3 real domains + noise, a "
                                              "memorized document or a scarce target")
                              ).set_defaults(fn=corpus_cli.corpus_known_main)
    from ado_jax.harness import local_tasks  # the harness floor's task builder (numpy; no lm-eval)

    local_tasks.add_tasks_args(csub.add_parser("tasks", help="offline harness tasks (multiple choice, last word) "
                                               "from a corpus's held-out text")
                               ).set_defaults(fn=local_tasks.corpus_tasks_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ado-jax``; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"] and any(a == "--task" or a.startswith("--task=") for a in argv):
        # The synthetic tasks have their own trainer (vmap over seeds, scan over steps).
        from ado_jax.synthetic import train as synthetic_train

        try:
            synthetic_train.main(argv[1:])
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    args = build_parser(field_help=any(a in ("-h", "--help") for a in argv)).parse_args(argv)
    from ado_jax.run_dir import RunDirBusy, os_error_message

    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, MemoryError, RunDirBusy) as e:  # one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # permissions, a file where a directory should be, a full disk
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a Ctrl-C before training started (or a second one during it)
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
