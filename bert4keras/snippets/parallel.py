"""``parallel_apply`` / ``parallel_apply_generator``: map a function over an
iterable with a bounded process (or thread) pool, as bert4keras 0.11.5's
helpers of the same names (same arguments; ``unordered`` added to the
generator)."""

import collections
import multiprocessing
import queue

import numpy as np


_WORKER_FUNC = None
_KEEP_STATE = "keep the inherited numpy random state"  # a worker left without a seed


def _worker_init(func, seed_queue):
    """Pool initializer: remember ``func`` and (re)seed numpy's global RNG."""
    global _WORKER_FUNC
    _WORKER_FUNC = func
    if seed_queue is not None:
        try:
            seed = seed_queue.get(timeout=10)
        except queue.Empty:
            seed = None
        if not (isinstance(seed, str) and seed == _KEEP_STATE):
            np.random.seed(seed)


def _worker_call(item):
    return _WORKER_FUNC(item)


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

    At most ``max_queue_size`` items are in flight (submitted but not yet
    yielded), so a huge or endless ``iterable`` is consumed lazily.  Follows
    ``parallel_apply_generator`` of the original bert4keras; unlike it, order
    is kept here when ``unordered=False`` without collecting everything first.

    ``func`` reaches the workers through the pool initializer, so with the
    ``fork`` start method (Linux default) closures and lambdas work; with
    ``spawn``/``forkserver`` ``func`` must be picklable.  Items and results are
    always pickled.

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
        Exception: whatever ``func`` raised, re-raised in the caller.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_queue_size < 1:
        raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
    if dummy:
        from multiprocessing.dummy import Pool

        pool = Pool(workers, _worker_init, (func, None))
    else:
        seed_queue = None
        if random_seeds is True:
            random_seeds = [None] * workers
        if random_seeds:
            seeds = list(random_seeds)[:workers]
            seeds += [_KEEP_STATE] * (workers - len(seeds))  # one item per worker: no waiting
            seed_queue = multiprocessing.Queue()
            for seed in seeds:
                seed_queue.put(seed)
        pool = multiprocessing.Pool(workers, _worker_init, (func, seed_queue))

    done = queue.Queue()  # filled by the pool's result-handler thread
    arrived = collections.deque()  # unordered mode: results ready to yield
    pending = {}  # ordered mode: results waiting for their turn
    next_index = 0  # ordered mode: the index to yield next

    def store(block):
        """Move one finished task from ``done`` to arrived/pending."""
        try:
            index, ok, value = done.get(block=block)
        except queue.Empty:
            return False
        if not ok:
            raise value
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

    def submit(index, item):
        pool.apply_async(
            _worker_call,
            (item,),
            callback=lambda result: done.put((index, True, result)),
            error_callback=lambda error: done.put((index, False, error)),
        )

    in_flight = 0  # submitted but not yet yielded
    try:
        for index, item in enumerate(iterable):
            submit(index, item)
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
        pool.terminate()
        pool.join()


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
    ``func`` picklability, seeding and errors).  Follows ``parallel_apply``
    of the original bert4keras.

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
