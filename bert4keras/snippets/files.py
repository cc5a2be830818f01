"""``open``: bert4keras 0.11.5's file wrapper with line indexing, so that line
``i`` of a large corpus is read without reading the lines before it."""

import builtins
import json
import os


class open:  # the 0.11.5 name: scripts do `from bert4keras.snippets import open`
    """A file object (as built-in ``open``) whose lines can also be indexed.

    Everything the built-in file does -- iteration, ``read``, ``readline``,
    ``readlines``, ``write``, ``seek``, ``tell``, ``with`` -- goes to the
    underlying file.  With ``indexable`` the start of every line is recorded
    once (one pass over the file); then ``f[i]`` seeks there and returns line
    ``i`` (with its ``'\\n'``), ``f[-1]`` the last one, ``f[a:b]`` a list of
    lines, and ``len(f)`` is the number of lines.  Indexing moves the file
    position (as in 0.11.5): iteration afterwards continues after the line read.

    The offsets are the values of ``tell()`` at each line start (byte
    positions for UTF-8 text), stored in ``self.offsets``; a JSON file given
    as ``indexable`` caches them between runs, in 0.11.5's format (a JSON
    list of ints), so an index written by 0.11.5 is read as is.  A cached
    index is trusted: rebuild it (delete the file) when the text changes.

    In binary mode (``'rb'``) with an ``encoding`` the lines are decoded to
    ``str`` (and ``write`` encodes ``str``); 0.11.5 on Python 3 could not open
    binary files at all.

    Args:
        name: path of the file.
        mode: as the built-in ``open`` (``'r'``, ``'w'``, ``'rb'``, ...).
        encoding: text encoding (``None``: the locale's, as built-in ``open``).
        errors: decoding error handler (``'strict'``, ``'ignore'``, ...).
        indexable: ``False`` (no index), ``True`` (index now), or a path:
            read the index from this JSON file if it exists, else index now
            and write it there.

    Raises:
        OSError: the file cannot be opened (as built-in ``open``).
        TypeError: ``f[i]`` or ``len(f)`` without ``indexable``.
        IndexError: ``f[i]`` past the last line.

    Example::

        with open('corpus.txt', encoding='utf-8', indexable=True) as f:
            n = len(f)
            line = f[n // 2]
    """

    def __init__(self, name, mode="r", encoding=None, errors="strict", indexable=False):
        self.name = name
        self.mode = mode
        self.encoding = encoding
        self.errors = errors
        self.binary = "b" in mode
        if self.binary:
            self.file = builtins.open(name, mode)
        else:
            self.file = builtins.open(name, mode, encoding=encoding, errors=errors)
        self.iterator = None
        self.offsets = None
        if indexable:
            cache = None if indexable is True else os.fspath(indexable)
            if cache is not None and os.path.exists(cache):
                with builtins.open(cache, encoding="utf-8") as f:
                    self.offsets = json.load(f)
            else:
                self.create_indexes()
                if cache is not None:
                    with builtins.open(cache, "w", encoding="utf-8") as f:
                        json.dump(self.offsets, f)

    def create_indexes(self):
        """Record in ``self.offsets`` where each line starts (one pass over
        the file, with a progress bar on a terminal); the position returns to 0."""
        from tqdm import tqdm

        self.seek(0)
        self.offsets, offset = [], 0
        with tqdm(total=os.path.getsize(self.name), desc="indexing %s" % self.name,
                  unit="B", unit_scale=True, disable=None) as bar:
            while self.file.readline():
                self.offsets.append(offset)
                end = self.file.tell()
                bar.update(end - offset)
                offset = end
        self.seek(0)

    def _decode(self, text):
        if self.binary and self.encoding and isinstance(text, bytes):
            text = text.decode(self.encoding, self.errors)
        return text

    def __getitem__(self, key):
        if self.offsets is None:
            raise TypeError("%s was opened without indexable=True: lines cannot be "
                            "indexed" % self.name)
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self.offsets)))]
        try:
            offset = self.offsets[key]
        except IndexError:
            raise IndexError("line %s of %s: the file has %d lines"
                             % (key, self.name, len(self.offsets))) from None
        self.seek(offset)
        return self.readline()

    def __len__(self):
        if self.offsets is None:
            raise TypeError("%s was opened without indexable=True: it has no length"
                            % self.name)
        return len(self.offsets)

    def __iter__(self):
        for line in self.file:
            yield self._decode(line)

    def next(self):
        """The next line (0.11.5's Python 2 style ``f.next()``)."""
        if self.iterator is None:
            self.iterator = self.__iter__()
        return next(self.iterator)

    __next__ = next

    def read(self, size=-1):
        """Up to ``size`` characters (bytes in binary mode without encoding); -1: all."""
        return self._decode(self.file.read(size))

    def readline(self, size=-1):
        """The next line with its ``'\\n'`` (``''`` at the end of the file)."""
        return self._decode(self.file.readline(size))

    def readlines(self, hint=-1):
        """The remaining lines as a list."""
        return [self._decode(line) for line in self.file.readlines(hint)]

    def write(self, text):
        """Write ``text``: ``str`` or ``bytes``, converted to what the mode needs."""
        if self.binary and isinstance(text, str):
            text = text.encode(self.encoding or "utf-8", self.errors)
        elif not self.binary and isinstance(text, bytes):
            text = text.decode(self.encoding or "utf-8", self.errors)
        return self.file.write(text)

    def flush(self):
        """Flush the write buffer."""
        self.file.flush()

    def close(self):
        """Close the file (the index in ``offsets`` stays)."""
        self.file.close()

    @property
    def closed(self):
        """Whether the file is closed."""
        return self.file.closed

    def tell(self):
        """The current position (an opaque number in text mode, as built-in files)."""
        return self.file.tell()

    def seek(self, offset=0, whence=0):
        """Move to ``offset`` (a value from :meth:`tell`); returns the new position."""
        return self.file.seek(offset, whence)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()
