"""``parallel_apply`` / ``parallel_apply_generator``: map a function over an
iterable with a bounded process (or thread) pool, as bert4keras 0.11.5's
helpers of the same names (same arguments; ``unordered`` added to the
generator).

Worker processes are our own (one pipe each), not a ``multiprocessing.Pool``:
a pool silently replaces a worker that dies (out-of-memory kill, SIGKILL, a
crash in native code) and waits forever for the item it held.  Here the caller
watches every worker's pipe and process sentinel, so a dead worker surfaces as
:class:`WorkerDiedError` naming the worker, its pid, how it ended and the item
it was processing.
"""

import collections
import multiprocessing
import os
import queue
import signal
import traceback
from multiprocessing import connection

import numpy as np


_KEEP_STATE = "keep the inherited numpy random state"  # a worker left without a seed
_PARENT_POLL_SECONDS = 1.0  # how often an idle worker checks its parent is alive


class WorkerDiedError(RuntimeError):
    """A ``parallel_apply`` worker process ended while it held an item.

    Raised in the caller (never a hang) when a worker is killed by a signal
    (the kernel's out-of-memory killer and ``kill -9`` send SIGKILL), crashes
    in native code, or exits (``os._exit`` / ``sys.exit`` inside ``func``).
    The message names the worker, its pid, its exit code or signal and the
    index of the item it was processing; that item's result is lost.
    """


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of its error."""

    def __str__(self):
        return self.args[0]


def _process_worker(conn, func, seed):
    """Body of a worker process: receive ``(index, item)``, send back
    ``(index, ok, value)`` until told to stop (``None``), the pipe closes, or
    the parent process is gone."""
    if not (isinstance(seed, str) and seed == _KEEP_STATE):
        np.random.seed(seed)
    parent = os.getppid()
    while True:
        while not conn.poll(_PARENT_POLL_SECONDS):
            if os.getppid() != parent:  # orphaned: nobody will read our results
                return
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, item = task
        try:
            message = (index, True, func(item))
        except Exception as error:  # re-raised in the caller
            message = (index, False, (error, traceback.format_exc()))
        try:
            conn.send(message)
        except Exception as error:  # result or exception not picklable
            kind = "result" if message[1] else "exception"
            text = f"the {kind} of item {index} cannot be sent back from the worker: {error!r}"
            if not message[1]:
                text += f"; the worker's traceback:\n{message[2][1]}"
            conn.send((index, False, (RuntimeError(text), traceback.format_exc())))


def _describe_exit(exitcode):
    if exitcode is None:
        return "closed its pipe"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the out-of-memory killer sends SIGKILL)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode}"


class _ProcessWorkers:
    """``workers`` processes, each given one item at a time over its own pipe.

    An item is sent only to an idle worker (one blocked in ``recv``), so the
    two sides never both block on a full pipe; items waiting for a worker stay
    in ``backlog`` in the caller.
    """

    def __init__(self, func, workers, seeds):
        context = multiprocessing.get_context()
        self.backlog = collections.deque()
        self.procs, self.conns, self.busy = [], [], []
        try:
            for slot in range(workers):
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=_process_worker,
                    args=(child_end, func, seeds[slot]),
                    name=f"parallel_apply-worker-{slot}",
                    daemon=True,
                )
                process.start()
                child_end.close()  # so the caller sees EOF when the worker dies
                self.procs.append(process)
                self.conns.append(parent_end)
                self.busy.append(None)
        except BaseException:
            self.close()
            raise

    def submit(self, index, item):
        self.backlog.append((index, item))
        self._dispatch()

    def _dispatch(self):
        for slot, held in enumerate(self.busy):
            if not self.backlog:
                return
            if held is None:
                index, item = self.backlog[0]
                try:
                    self.conns[slot].send((index, item))
                except (BrokenPipeError, ConnectionResetError):
                    self._died(slot, index)
                self.backlog.popleft()
                self.busy[slot] = index

    def _died(self, slot, index):
        process = self.procs[slot]
        process.join(timeout=5)  # the pipe can close a moment before the exit status
        raise WorkerDiedError(
            f"parallel_apply: worker {slot} of {len(self.procs)} (pid {process.pid}) "
            f"{_describe_exit(process.exitcode)} while processing item {index} "
            "(0-based position in the iterable); its result is lost and the "
            "remaining items were not processed"
        )

    def get(self, block):
        """One finished ``(index, ok, value)``, or ``None`` if none is ready
        and ``block`` is false.  Raises :class:`WorkerDiedError`."""
        slots = [slot for slot, held in enumerate(self.busy) if held is not None]
        if not slots:
            if block:
                raise RuntimeError("parallel_apply: internal error, waiting with no item in flight")
            return None
        waitables = [self.conns[s] for s in slots] + [self.procs[s].sentinel for s in slots]
        ready = connection.wait(waitables, timeout=None if block else 0)
        if not ready:
            return None
        for slot in slots:  # results first: a worker may finish an item, then die
            conn = self.conns[slot]
            if conn in ready or self.procs[slot].sentinel in ready:
                if conn in ready or conn.poll():
                    try:
                        index, ok, value = conn.recv()
                    except (EOFError, OSError):
                        self._died(slot, self.busy[slot])
                    self.busy[slot] = None
                    self._dispatch()
                    return index, ok, value
                self._died(slot, self.busy[slot])
        return None

    def close(self):
        for conn in self.conns:
            conn.close()
        for process in self.procs:
            if process.is_alive():
                process.terminate()
        for process in self.procs:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()


class _ThreadWorkers:
    """``dummy=True``: a ``multiprocessing.dummy`` (thread) pool; nothing is
    pickled and a thread cannot die without an exception."""

    def __init__(self, func, workers):
        from multiprocessing.dummy import Pool

        self.func = func
        self.pool = Pool(workers)
        self.done = queue.Queue()  # filled by the pool's result-handler thread

    def submit(self, index, item):
        self.pool.apply_async(
            self.func,
            (item,),
            callback=lambda result: self.done.put((index, True, result)),
            error_callback=lambda error: self.done.put((index, False, (error, None))),
        )

    def get(self, block):
        try:
            return self.done.get(block=block)
        except queue.Empty:
            return None

    def close(self):
        self.pool.terminate()
        self.pool.join()


def parallel_apply_generator(
    func,
    iterable,
    workers,
    max_queue_size,
    dummy=False,
    random_seeds=True,
    unordered=True,
):
    """Apply ``func`` to ``iterable`` in a pool; yield ``(index, result)`` pairs.

    At most ``max_queue_size`` items are in flight (taken from ``iterable``
    but not yet yielded), so a huge or endless ``iterable`` is consumed
    lazily.  Follows ``parallel_apply_generator`` of the original bert4keras;
    unlike it, order is kept here when ``unordered=False`` without collecting
    everything first, and a worker process that dies raises instead of
    hanging.

    ``func`` reaches the worker processes as a process argument, so with the
    ``fork`` start method (Linux default) closures and lambdas work; with
    ``spawn``/``forkserver`` ``func`` must be picklable.  Items and results
    are always pickled (not with ``dummy``).

    Args:
        func: ``func(item) -> result``.
        iterable: the items.
        workers: number of worker processes (threads when ``dummy``).
        max_queue_size: bound on the items in flight (``>= 1``).
        dummy: use threads (``multiprocessing.dummy``) instead of processes.
        random_seeds: ``True`` reseeds each worker process's ``np.random``
            from fresh entropy (forked workers would otherwise share one
            state); a list gives one seed per worker; ``False``/``None`` leaves
            the state alone; a list shorter than ``workers`` leaves the
            state of the remaining workers alone, extra seeds are unused
            (as in 0.11.5).  Ignored when ``dummy``.
        unordered: if ``False`` results come in input order; if ``True`` in
            completion order.

    Yields:
        ``(index, result)`` with ``index`` the position of the item.

    Raises:
        ValueError: ``workers < 1`` or ``max_queue_size < 1``.
        WorkerDiedError: a worker process died (killed by a signal such as
            the out-of-memory killer's SIGKILL, or exited) while holding an
            item; the message names the worker, its pid, the signal or exit
            code and the item's index.
        Exception: whatever ``func`` raised, re-raised in the caller (with
            the worker's traceback as ``__cause__``).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_queue_size < 1:
        raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
    if dummy:
        pool = _ThreadWorkers(func, workers)
    else:
        if random_seeds is True:
            seeds = [None] * workers
        elif random_seeds:
            seeds = list(random_seeds)[:workers]
        else:
            seeds = []
        seeds += [_KEEP_STATE] * (workers - len(seeds))
        pool = _ProcessWorkers(func, workers, seeds)

    arrived = collections.deque()  # unordered mode: results ready to yield
    pending = {}  # ordered mode: results waiting for their turn
    next_index = 0  # ordered mode: the index to yield next

    def store(block):
        """Move one finished task to arrived/pending; False if none was ready."""
        finished = pool.get(block)
        if finished is None:
            return False
        index, ok, value = finished
        if not ok:
            error, remote_traceback = value
            if remote_traceback:
                raise error from _RemoteTraceback(f'\n"""\n{remote_traceback}"""')
            raise error
        if unordered:
            arrived.append((index, value))
        else:
            pending[index] = value
        return True

    def ready():
        nonlocal next_index
        out = []
        if unordered:
            while arrived:
                out.append(arrived.popleft())
        else:
            while next_index in pending:
                out.append((next_index, pending.pop(next_index)))
                next_index += 1
        return out

    in_flight = 0  # taken from the iterable but not yet yielded
    try:
        for index, item in enumerate(iterable):
            pool.submit(index, item)
            in_flight += 1
            while store(block=False):
                pass
            while True:
                for result in ready():
                    in_flight -= 1
                    yield result
                if in_flight < max_queue_size:
                    break
                store(block=True)
        while in_flight:
            store(block=True)
            for result in ready():
                in_flight -= 1
                yield result
    finally:
        pool.close()


def parallel_apply(
    func,
    iterable,
    workers,
    max_queue_size,
    callback=None,
    dummy=False,
    random_seeds=True,
    unordered=True,
):
    """Map ``func`` over ``iterable`` with a process (or thread) pool.

    Same arguments as :func:`parallel_apply_generator` (which documents
    ``func`` picklability, seeding and errors, including
    :class:`WorkerDiedError` when a worker process dies).  Follows
    ``parallel_apply`` of the original bert4keras.

    Args:
        callback: if given, ``callback(result)`` is called for every result
            (in completion order, or input order when ``unordered=False``)
            and nothing is collected.
        unordered: ``False`` returns the results in input order.

    Returns:
        ``list`` of results, or ``None`` when ``callback`` is given.
    """
    generator = parallel_apply_generator(
        func, iterable, workers, max_queue_size, dummy, random_seeds, unordered
    )
    if callback is None:
        return [result for _, result in generator]
    for _, result in generator:
        callback(result)
    return None
