"""``ado-jax corpus merge A B ... --out C``: one corpus from encodes of disjoint input files.

Several machines can each run ``ado-jax corpus encode`` on their own share of a dataset's files
(with one ``--input-root`` and the same settings and tokenizer); bring the output folders onto
one filesystem and merge them. The shards are hard-linked into ``C`` (copied where linking is
not possible), then ``C``'s shard indexes and manifest are assembled from the parts of all
inputs, exactly as if one machine had encoded every file. ``C`` appears complete or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ado_jax.data.encode_records import SETTINGS, assemble


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not supported
        shutil.copy2(src, dst)


def _tokenizer_files(d: Path) -> dict[str, bytes]:
    cfg = json.loads((d / "tokenizer.json").read_text())
    files = {"tokenizer.json": (d / "tokenizer.json").read_bytes()}
    if "file" in cfg:
        files[cfg["file"]] = (d / cfg["file"]).read_bytes()
    return files


def merge_corpora(dirs, out_dir, log=print) -> Path:
    """Merges the finished record encodes ``dirs`` into a new corpus at ``out_dir``; returns it.

    Raises ValueError when the encodes differ in settings or tokenizer, or share an input file
    (naming it), and FileExistsError when ``out_dir`` exists.
    """
    dirs = [Path(d) for d in dirs]
    out = Path(out_dir)
    if len(dirs) < 2:
        raise ValueError(f"corpus merge needs at least two encode folders, got {len(dirs)}")
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another --out")
    for d in dirs:
        if not (d / SETTINGS).exists() or not (d / "manifest.json").exists():
            raise ValueError(f"{d} is not a finished `ado-jax corpus encode` of record files "
                             f"({SETTINGS} or manifest.json missing); rerun its encode to finish it")
    first_settings, first_tok = (dirs[0] / SETTINGS).read_text(), _tokenizer_files(dirs[0])
    owner = {}
    for d in dirs:
        settings = json.loads((d / SETTINGS).read_text())
        if settings != json.loads(first_settings):
            diff = {k: v for k, v in settings.items() if json.loads(first_settings).get(k) != v}
            raise ValueError(f"{d} was encoded with other settings than {dirs[0]}: {diff}")
        if _tokenizer_files(d) != first_tok:
            raise ValueError(f"{d} has another tokenizer than {dirs[0]}; encode every part with the same --tokenizer")
        for part in sorted((d / "parts").glob("*.json")):
            if part.name in owner:
                raise ValueError(f"input {part.stem!r} was encoded in both {owner[part.name]} and {d}; "
                                 "merge only encodes of disjoint input files")
            owner[part.name] = d
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        (tmp / SETTINGS).write_text(first_settings)
        for name, data in first_tok.items():
            (tmp / name).write_bytes(data)
        for name, d in owner.items():
            part = json.loads((d / "parts" / name).read_text())
            for splits in part["shards"].values():
                for entries in splits.values():
                    for s in entries:
                        for src in (d / "tokens" / s["file"], (d / "tokens" / s["file"]).with_suffix(".json")):
                            _link(src, tmp / "tokens" / src.relative_to(d / "tokens"))
            _link(d / "parts" / name, tmp / "parts" / name)
        manifest = assemble(tmp, log)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"merged {len(dirs)} encodes ({len(owner)} input files, {len(manifest['names'])} domains) into {out}")
    return out
