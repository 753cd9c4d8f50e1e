"""keel's status codes and the Python exceptions they become."""

OK = 0
ENULL = 1
EINVAL = 2
EUNSUPPORTED = 3
ENOMEM = 4
EOVERFLOW = 5
EISA = 6
EIO = 7
EFORMAT = 8
ETHREAD = 9
EBUSY = 10  # the context is in a call on another thread (keel.h: one thread at a time)


class KeelError(Exception):
    """Base of every error keel raises. `status` is the keel_status code (an int)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class KeelValueError(KeelError, ValueError):
    """A bad argument value or shape (KEEL_EINVAL, KEEL_ENULL, KEEL_EOVERFLOW)."""


class KeelTypeError(KeelError, TypeError):
    """A dtype this version does not support (KEEL_EUNSUPPORTED)."""


class KeelMemoryError(KeelError, MemoryError):
    """An allocation failed (KEEL_ENOMEM)."""


class KeelRuntimeError(KeelError, RuntimeError):
    """Anything else: KEEL_EISA, KEEL_ETHREAD, KEEL_EIO, KEEL_EFORMAT, KEEL_EBUSY."""


_CLASS_OF_STATUS = {
    ENULL: KeelValueError,
    EINVAL: KeelValueError,
    EOVERFLOW: KeelValueError,
    EUNSUPPORTED: KeelTypeError,
    ENOMEM: KeelMemoryError,
}


def error_for_status(status, message):
    """The exception for a failed call: the class follows the status, the text is keel's."""
    cls = _CLASS_OF_STATUS.get(status, KeelRuntimeError)
    return cls(message, status)


for _cls in (KeelError, KeelValueError, KeelTypeError, KeelMemoryError, KeelRuntimeError):
    _cls.__module__ = "keel"  # shown as keel.KeelValueError in tracebacks
