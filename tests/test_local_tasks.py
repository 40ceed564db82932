"""``ado-jax corpus tasks`` (ado_jax/harness/local_tasks.py): offline multiple-choice and last-word
tasks from a corpus's held-out text. No lm-eval needed here; tests/test_harness_lm_eval.py scores
them through the harness."""

import json

import pytest

from ado_jax.harness.local_tasks import build_heldout_tasks, corpus_tasks_main

WORDS = ("alpha beta gamma delta epsilon river mountain forest ocean desert garden window "
         "letter number orange purple silver golden morning evening winter summer").split()


def _corpus(root, docs_per_domain=12):
    """A built-corpus stand-in: a manifest naming two domains and their held-out JSONL (one JSON
    string per line, the corpus's format)."""
    (root / "text").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"names": ["prose", "verse"]}))
    for k, name in enumerate(("prose", "verse")):
        docs = [" ".join(WORDS[(7 * i + 3 * j + k) % len(WORDS)] for j in range(40)) + f". End {i}." for i in
                range(docs_per_domain)]
        (root / "text" / f"{name}.heldout.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return docs


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_are_real_passages_with_one_true_continuation_and_rebuild_identically(tmp_path):
    _corpus(tmp_path / "corpus")
    names = build_heldout_tasks(tmp_path / "corpus", tmp_path / "a", num=30, seed=3)
    assert names == ["heldout_choice_prose", "heldout_choice_verse", "heldout_lastword_prose",
                     "heldout_lastword_verse"]
    docs = [json.loads(x) for x in (tmp_path / "corpus" / "text" / "verse.heldout.jsonl").read_text().splitlines()]
    choice = _read(tmp_path / "a" / "heldout_choice_verse.jsonl")
    assert len(choice) == 30 and {r["gold"] for r in choice} > {0}  # the answer's place is shuffled
    for r in choice:
        assert len(r["context"]) == 48 and len(set(r["choices"])) == 4 and all(len(c) == 16 for c in r["choices"])
        assert any(r["context"] + r["choices"][r["gold"]] in d for d in docs)  # context + gold: the document's text
    last = _read(tmp_path / "a" / "heldout_lastword_verse.jsonl")
    assert len(last) == 30
    for r in last:
        assert r["target"][0].isspace() and r["target"][1:].isalpha() and 3 <= len(r["target"]) - 1 <= 12
        assert 16 <= len(r["context"]) <= 48 and r["context"].strip()
        assert any(r["context"] + r["target"] in d for d in docs)
    yaml = (tmp_path / "a" / "heldout_choice_verse.yaml").read_text()
    assert "task: heldout_choice_verse" in yaml and "output_type: multiple_choice" in yaml
    assert 'target_delimiter: ""' in yaml and str((tmp_path / "a" / "heldout_choice_verse.jsonl").resolve()) in yaml
    build_heldout_tasks(tmp_path / "corpus", tmp_path / "b", num=30, seed=3)
    for name in names:  # the same bytes on a rebuild; another seed draws other rows
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    build_heldout_tasks(tmp_path / "corpus", tmp_path / "c", num=30, seed=4)
    assert (tmp_path / "c" / "heldout_choice_verse.jsonl").read_bytes() != \
        (tmp_path / "a" / "heldout_choice_verse.jsonl").read_bytes()
    assert not list((tmp_path / "a").glob("*.tmp*"))  # no temporary file left behind


def test_cli_prints_the_task_names_and_bad_input_is_one_clear_error(tmp_path, capsys):
    _corpus(tmp_path / "corpus")
    base = ["--corpus-dir", str(tmp_path / "corpus"), "--out", str(tmp_path / "t")]
    assert corpus_tasks_main([*base, "--domains", "verse", "--num", "5"]) == 0
    assert capsys.readouterr().out.strip() == "heldout_choice_verse,heldout_lastword_verse"
    for args, message in (
            (["--domains", "verse,klingon"], "unknown domain(s) ['klingon']: the corpus at"),
            (["--num", "0"], "num=0: expected an integer >= 1"),
            (["--context-chars", "4"], "context_chars=4: expected an integer >= 8"),
            (["--num", "100000"], "words (3-12 letters after whitespace, 16 characters in) for 100000 rows"),
            (["--context-chars", "5000"], "no held-out document has 5016 characters")):
        assert corpus_tasks_main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert corpus_tasks_main(["--corpus-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "u")]) == 2
    assert "not a built corpus (no manifest.json)" in capsys.readouterr().err


def test_a_domain_without_four_distinct_continuations_is_refused(tmp_path):
    root = tmp_path / "corpus"
    (root / "text").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"names": ["rule"]}))
    short = [f"a few words here and there, {w} {w}" for w in WORDS]  # words enough, each under 64 characters
    docs = ["=" * 2000, *short]  # the one document long enough for a passage is a rule line: one ending
    (root / "text" / "rule.heldout.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    with pytest.raises(ValueError, match="multiple-choice rows with 4 distinct continuations"):
        build_heldout_tasks(root, tmp_path / "t", num=10)
