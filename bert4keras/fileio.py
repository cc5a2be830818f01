"""Paths on every file system TensorFlow knows: local, ``gs://``, ``ram://``, ...

Checkpoints, records and logs are read and written through these functions,
which hand every ``scheme://`` path to ``tf.io.gfile``, so a TPU run can keep
everything in Cloud Storage and a test can keep everything in TensorFlow's
in-memory ``ram://`` file system.  These helpers hide the
differences that matter:

* **Atomic replacement.**  On a local disk ``rename`` is atomic, so a file is
  written under a temporary name, flushed, ``fsync``-ed and renamed.  On other
  file systems (object stores such as ``gs://``; ``ram://``, whose directory
  rename even drops the directory's files) rename is a copy and a delete.
  There a single file is written straight to its final name -- an object
  store shows an object only once its upload is complete -- and a group of
  files that must appear together is written under a unique name and then
  published by a small pointer file (see :mod:`pretraining.resume`).
  :func:`atomic_rename` says which regime a path is in.
* **Existence.**  ``ram://`` answers ``exists``/``isdir`` True for any prefix
  of a stored name (``ram://d/f`` "exists" when ``ram://d/f.txt`` does), and
  object stores list directories as ``name/``.  :func:`exists`,
  :func:`isdir` and :func:`listdir` give the answers of a local disk on all
  of them (away from a local disk by looking the name up in its parent's
  listing).

Local paths are served by the standard library (what ``tf.io.gfile`` does
for them too, plus ``fsync``), so reading a local checkpoint or config under
the JAX or torch backend does not import TensorFlow; every ``scheme://`` path
goes through ``tf.io.gfile``, TensorFlow being imported on first use.
"""

import builtins
import glob as _glob
import hashlib
import os
import posixpath
import shutil
import uuid

_BLOCK = 1 << 20


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_local(path):
    """True for a plain local path (no ``scheme://``; ``file://`` URLs go through gfile)."""
    return "://" not in os.fspath(path)


def atomic_rename(path):
    """True where ``rename`` atomically replaces a file or directory (a local disk)."""
    return is_local(path)


def _module(path):
    return os.path if is_local(path) else posixpath


def join(path, *parts):
    """``os.path.join`` for local paths, ``/``-joined for ``scheme://`` URLs."""
    path = os.fspath(path)
    return _module(path).join(path, *parts)


def dirname(path):
    path = os.fspath(path)
    if not is_local(path):
        scheme, _, rest = path.partition("://")
        return scheme + "://" + posixpath.dirname(rest.rstrip("/"))
    return os.path.dirname(path)


def basename(path):
    path = os.fspath(path)
    return _module(path).basename(path.rstrip("/") if not is_local(path) else path)


def _parent_lists(path):
    """True if ``path``'s parent lists it; True at the top (``ram://name``,
    ``gs://bucket``), whose parent cannot be listed: gfile's answer stands."""
    parent, name = dirname(path), basename(path)
    if not parent.partition("://")[2].strip("/"):
        return True
    return name in listdir(parent)


def exists(path):
    """True if a file or directory ``path`` exists (not a mere prefix of one)."""
    path = os.fspath(path)
    if is_local(path):
        return os.path.exists(path)
    return _gfile().exists(path) and _parent_lists(path)


def isdir(path):
    """True if ``path`` is an existing directory."""
    path = os.fspath(path)
    if is_local(path):
        return os.path.isdir(path)
    return _gfile().isdir(path) and _parent_lists(path)


def isfile(path):
    """True if ``path`` is an existing file."""
    path = os.fspath(path)
    if is_local(path):
        return os.path.isfile(path)
    return exists(path) and not _gfile().isdir(path)


def listdir(path):
    """Sorted names in directory ``path`` (no trailing ``/``); [] when it does not exist."""
    path = os.fspath(path)
    try:
        names = os.listdir(path) if is_local(path) else _gfile().listdir(path)
    except Exception:  # noqa: BLE001 -- NotFoundError and friends
        return []
    return sorted({name.rstrip("/") for name in names if name.rstrip("/")})


def glob(pattern):
    """Sorted paths matching a shell ``pattern`` (``*``, ``?``, ``[...]``)."""
    pattern = os.fspath(pattern)
    return sorted(_glob.glob(pattern) if is_local(pattern) else _gfile().glob(pattern))


def has_magic(pattern):
    return any(c in os.fspath(pattern) for c in "*?[")


def walk_files(path):
    """Every file below directory ``path``, sorted."""
    path = os.fspath(path)
    found = []
    for root, _, files in (os.walk(path) if is_local(path) else _gfile().walk(path)):
        found += [join(root, name) for name in files]
    return sorted(found)


def makedirs(path):
    """Create directory ``path`` and its parents; an existing one is fine."""
    path = os.fspath(path)
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    else:
        _gfile().makedirs(path)


def remove(path):
    """Delete file ``path``; a missing file is not an error."""
    path = os.fspath(path)
    try:
        os.remove(path) if is_local(path) else _gfile().remove(path)
    except Exception:  # noqa: BLE001 -- FileNotFoundError, tf NotFoundError
        if exists(path):
            raise


def rmtree(path):
    """Delete directory ``path`` and everything in it; missing is not an error."""
    path = os.fspath(path)
    try:
        shutil.rmtree(path) if is_local(path) else _gfile().rmtree(path)
    except Exception:  # noqa: BLE001
        if exists(path):
            raise


def rename(src, dst, overwrite=True):
    """Move ``src`` to ``dst`` (atomic only where :func:`atomic_rename`).

    Raises:
        FileExistsError (local) / ``tf.errors.AlreadyExistsError``: ``dst``
            exists and ``overwrite`` is False.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    if not is_local(src):
        _gfile().rename(src, dst, overwrite=overwrite)
    elif overwrite:
        os.replace(src, dst)
    else:
        if os.path.exists(dst):
            raise FileExistsError("cannot rename %r to %r: it exists" % (src, dst))
        os.rename(src, dst)


def copy(src, dst):
    """Copy file ``src`` to ``dst`` (replacing it), across file systems too."""
    write_bytes(dst, read_bytes(src))


def getsize(path):
    """Size of file ``path`` in bytes."""
    path = os.fspath(path)
    return os.path.getsize(path) if is_local(path) else int(_gfile().stat(path).length)


def open(path, mode="r"):  # noqa: A001 -- the file system's open
    """A file object; text modes read and write UTF-8 ``str`` with no newline
    translation (``tf.io.gfile.GFile`` away from the local disk)."""
    path = os.fspath(path)
    if not is_local(path):
        return _gfile().GFile(path, mode)
    if "b" in mode:
        return builtins.open(path, mode)
    return builtins.open(path, mode, encoding="utf-8", newline="")


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_text(path):
    return read_bytes(path).decode("utf-8")


def fsync(path):
    """Flush a local file or directory to disk (nothing elsewhere)."""
    path = os.fspath(path)
    if not is_local(path):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unique_suffix():
    """A name part no other writer picks: the process id and 8 random hex digits."""
    return "%d-%s" % (os.getpid(), uuid.uuid4().hex[:8])


def write_stream(path, write, mode="wb"):
    """Write ``path`` with ``write(file)`` so readers see the old file or the new one.

    Local: into ``.tmp-`` + a unique name beside it, ``fsync``-ed, renamed over
    ``path``.  Elsewhere: straight to ``path`` (see the module docstring).
    """
    path = os.fspath(path)
    target = path
    if atomic_rename(path):
        target = join(dirname(path) or ".", ".tmp-%s-%s" % (unique_suffix(), basename(path)))
    try:
        with open(target, mode) as f:
            write(f)
            f.flush()
        if target != path:
            fsync(target)
            rename(target, path, overwrite=True)
            fsync(dirname(os.path.abspath(path)))
    except BaseException:
        if target != path:
            remove(target)
        raise


def write_bytes(path, data):
    """Replace ``path`` with ``data`` (``bytes``) as :func:`write_stream` does."""
    write_stream(path, lambda f: f.write(data))


def write_text(path, text):
    """Replace ``path`` with ``text`` encoded as UTF-8, as :func:`write_stream` does."""
    write_bytes(path, text.encode("utf-8"))


class StreamWriter:
    """A forward-only binary writer over a gfile handle, for ``zipfile`` / ``np.savez``.

    It reports no ``seek``, so ``zipfile`` writes data descriptors instead of
    seeking back, which object stores cannot do.
    """

    def __init__(self, handle):
        self._handle, self._position = handle, 0

    def write(self, data):
        self._handle.write(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self):
        return self._position

    def flush(self):
        self._handle.flush()

    def read(self, *_):  # np.savez takes any object with ``read`` for a file
        raise OSError("StreamWriter is write-only")


def sha256(path):
    """Hex SHA-256 of file ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()
