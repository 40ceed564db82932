"""Downstream-style harness tasks built offline from a corpus's held-out text.

The ADO paper's Table 1 tasks (HellaSwag, LAMBADA, ...) come from the Hugging Face hub, which a
machine without network cannot reach. These two kinds of lm-eval task are their offline stand-ins,
written as lm-eval YAMLs plus JSONL files (the ``--include_path`` convention) from the held-out split
of chosen domains, so a mixture's effect on text it never trained on (``data.eval_only_domains``)
is scored by the same harness path, accuracy and all:

* ``heldout_choice_<domain>`` (HellaSwag-style multiple choice): the context is ``context_chars``
  characters of a held-out document; the choices are the true next ``continuation_chars``
  characters and 3 continuations taken from other places of the same domain's held-out text
  (distinct strings); metrics ``acc`` and ``acc_norm``. Chance is 0.25.
* ``heldout_lastword_<domain>`` (LAMBADA-style): a word of 3-12 letters that follows whitespace;
  the context is up to ``context_chars`` characters before it, the target is the whitespace and
  the word; metrics ``acc`` (the target is the greedy continuation) and ``perplexity``.

Contexts are short (48 + 16 characters by default) because the models this scores at CPU scale
train on 64-token windows. Everything is drawn from ``numpy.random.default_rng([seed, i])`` for the
i-th domain of the corpus, so the files are the same bytes on every rebuild. Files are written
atomically (``ado_jax.storage.write_text``: a temporary sibling, then a rename).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from ado_jax import storage

KINDS = ("choice", "lastword")
_WORD = re.compile(r"(?<=\s)[A-Za-z]{3,12}(?=[\s.,;:!?])")
_YAML = {
    "choice": ("output_type: multiple_choice\ndoc_to_text: context\ndoc_to_target: gold\ndoc_to_choice: choices\n"
               "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
               "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"),
    "lastword": ("output_type: loglikelihood\ndoc_to_text: context\ndoc_to_target: target\n"
                 "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
                 "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"),
}


def task_name(kind: str, domain: str) -> str:
    """The lm-eval task name of ``kind`` (``choice`` | ``lastword``) over ``domain``."""
    return f"heldout_{kind}_{domain}"


def _heldout_docs(corpus_dir: Path, domain: str) -> list[str]:
    path = corpus_dir / "text" / f"{domain}.heldout.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def choice_rows(docs: list[str], rng, num: int, context_chars: int, continuation_chars: int) -> list[dict]:
    """``num`` rows ``{"context", "choices" [4], "gold"}``: a passage of a document and its true
    continuation among 3 continuations drawn from elsewhere in ``docs``."""
    span = context_chars + continuation_chars
    long_docs = [d for d in docs if len(d) >= span]
    if not long_docs:
        raise ValueError(f"no held-out document has {span} characters (context_chars + continuation_chars)")
    p = np.array([len(d) - span + 1 for d in long_docs], float)
    p /= p.sum()

    def passage():
        doc = long_docs[rng.choice(len(long_docs), p=p)]
        at = int(rng.integers(0, len(doc) - span + 1))
        return doc[at:at + context_chars], doc[at + context_chars:at + span]

    rows = []
    for _ in range(20 * num):
        if len(rows) == num:
            break
        context, true = passage()
        choices = [true] + [passage()[1] for _ in range(3)]
        if len(set(choices)) < 4 or not context.strip() or not all(c.strip() for c in choices):
            continue  # a repeated rule line or blank run: no right answer to tell apart
        order = rng.permutation(4)
        rows.append({"context": context, "choices": [choices[i] for i in order], "gold": int(np.argmin(order))})
    if len(rows) < num:
        raise ValueError(f"only {len(rows)} of {num} multiple-choice rows with 4 distinct continuations")
    return rows


def lastword_rows(docs: list[str], rng, num: int, context_chars: int) -> list[dict]:
    """``num`` rows ``{"context", "target"}``: ``target`` is a whitespace character and a word of
    3-12 letters, ``context`` the up to ``context_chars`` characters before it (at least 16, not
    all whitespace: lm-eval moves a context's trailing whitespace to the target)."""
    spots = [(d, m.start()) for d in docs for m in _WORD.finditer(d) if m.start() - 1 >= 16]
    if len(spots) < num:
        raise ValueError(f"only {len(spots)} words (3-12 letters after whitespace, 16 characters in) for {num} rows")
    rows = []
    for k in rng.permutation(len(spots)):
        doc, start = spots[int(k)]
        context = doc[max(0, start - 1 - context_chars):start - 1]
        if context.strip():  # lm-eval moves a context's trailing whitespace to the target: none may be left
            rows.append({"context": context, "target": doc[start - 1:_WORD.match(doc, start).end()]})
            if len(rows) == num:
                return rows
    raise ValueError(f"only {len(rows)} of {num} last-word rows with a context that is not all whitespace")


def build_heldout_tasks(corpus_dir, out_dir, domains=None, num: int = 200, seed: int = 0,
                        context_chars: int = 48, continuation_chars: int = 16) -> list[str]:
    """Writes both kinds of task for each of ``domains`` (default: every domain of the corpus) into
    ``out_dir`` (``<task>.yaml`` + ``<task>.jsonl``, the YAML naming the JSONL by absolute path);
    returns the task names, choice tasks first. ``num`` rows per task."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    manifest = corpus_dir / "manifest.json"
    if not manifest.exists():
        raise ValueError(f"{corpus_dir}: not a built corpus (no manifest.json); ado-jax corpus build makes one")
    names = list(json.loads(manifest.read_text())["names"])
    domains = names if not domains else list(domains)
    unknown = [d for d in domains if d not in names]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}: the corpus at {corpus_dir} has {names}")
    for flag, value, least in (("num", num, 1), ("context_chars", context_chars, 8),
                               ("continuation_chars", continuation_chars, 1)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{flag}={value!r}: expected an integer >= {least}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = {}
    for domain in domains:
        docs = _heldout_docs(corpus_dir, domain)
        rng = np.random.default_rng([seed, names.index(domain)])
        rows = {"lastword": lastword_rows(docs, rng, num, context_chars)}  # first: it fails fast on a short text
        rows["choice"] = choice_rows(docs, rng, num, context_chars, continuation_chars)
        for kind in KINDS:
            name = task_name(kind, domain)
            data = out_dir.resolve() / f"{name}.jsonl"
            storage.write_text(data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[kind]))
            head = (f"# {kind} task over the held-out text of domain {domain!r} of {corpus_dir.resolve()}"
                    f" (ado_jax.harness.local_tasks, seed {seed})\n")
            storage.write_text(out_dir / f"{name}.yaml",  # no delimiter: the text is cut mid-line, spaces and all
                               head + f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                               f"    test: {json.dumps(str(data))}\ntest_split: test\ntarget_delimiter: \"\"\n"
                               + _YAML[kind]
                               + "metadata:\n  version: 1.0\n")
            tasks[name] = kind
    return sorted(tasks, key=lambda t: (KINDS.index(tasks[t]), t))


def add_tasks_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the flags of ``ado-jax corpus tasks`` to ``p``; returns ``p``."""
    p.add_argument("--corpus-dir", default="data/corpus", help="the built corpus whose held-out split the tasks use")
    p.add_argument("--out", required=True, help="directory for the task YAMLs and JSONL files (--harness-include-path)")
    p.add_argument("--domains", default="", help="comma-separated domains (default: all; e.g. the run's "
                   "data.eval_only_domains)")
    p.add_argument("--num", type=int, default=200, help="rows per task")
    p.add_argument("--seed", type=int, default=0, help="seed of the passages and distractors")
    p.add_argument("--context-chars", type=int, default=48, help="characters of context (keep context + "
                   "continuation within the model's training window)")
    p.add_argument("--continuation-chars", type=int, default=16, help="characters of each multiple-choice ending")
    return p


def corpus_tasks_main(args=None) -> int:
    """Runs ``ado-jax corpus tasks`` (``ado_jax.harness.local_tasks``); ``args`` is a parsed
    namespace or an argv list. Prints the task names, comma-separated, for ``--harness``."""
    from ado_jax.data.corpus_cli import _ERRORS, _parse

    a = _parse(args, add_tasks_args)
    try:
        tasks = build_heldout_tasks(a.corpus_dir, a.out, [d for d in a.domains.split(",") if d], a.num, a.seed,
                                    a.context_chars, a.continuation_chars)
    except (*_ERRORS, OSError) as e:
        print(f"ado-jax corpus tasks: {e}", file=sys.stderr)
        return 2
    print(",".join(tasks))
    return 0
