"""Plain-Python helpers of bert4keras 0.11.5's ``snippets``: ``is_py2``,
``is_string``, ``is_one_of`` and the ``insert_arguments`` /
``delete_arguments`` decorators that its layers and models use on
``__init__``."""

import functools

is_py2 = False  # Python 3 only; kept for scripts that branch on it


def is_string(s):
    """Whether ``s`` is a ``str`` (``bytes`` is not; 0.11.5 on Python 3)."""
    return isinstance(s, str)


def is_one_of(x, ys):
    """Whether ``x`` *is* one of ``ys`` (identity, not ``==``).

    ``x in ys`` compares with ``==``, which for tensors is elementwise and
    cannot be turned into one ``bool``; this compares identities instead.
    """
    return any(x is y for y in ys)


def insert_arguments(**arguments):
    """Decorator giving a method extra keyword arguments with defaults.

    Each ``name=default`` becomes an attribute of ``self``, set before the
    method runs, from the caller's keyword if given (and then removed from
    the keywords the method sees) or else from the default::

        class Dense2(keras.layers.Dense):
            @insert_arguments(scale=1.0)
            def __init__(self, units, **kwargs):
                super().__init__(units, **kwargs)   # self.scale already set

    Args:
        **arguments: the new keyword names and their defaults.

    Returns:
        The decorator.
    """

    def decorator(func):
        @functools.wraps(func)
        def wrapper(self, *args, **kwargs):
            for name, default in arguments.items():
                setattr(self, name, kwargs.pop(name, default))
            return func(self, *args, **kwargs)

        return wrapper

    return decorator


def delete_arguments(*arguments):
    """Decorator forbidding some keyword arguments of a method.

    A call passing one of ``arguments`` as a keyword raises ``TypeError``
    naming the class and the keyword, like Python does for an unknown keyword
    (a subclass uses it to refuse options of its parent it cannot honour).

    Args:
        *arguments: the forbidden keyword names.

    Returns:
        The decorator.
    """

    def decorator(func):
        @functools.wraps(func)
        def wrapper(self, *args, **kwargs):
            for name in arguments:
                if name in kwargs:
                    raise TypeError(f"{type(self).__name__} got an unexpected keyword "
                                    f"argument '{name}'")
            return func(self, *args, **kwargs)

        return wrapper

    return decorator
