"""The module-level keel context: created on first use, one call at a time.

A keel_ctx (a thread pool and the chosen kernels) may be used by one thread at a time, so every
call through it holds a lock. The calls themselves release the GIL (ctypes does), and keel
spreads each call over the context's threads.
"""

import atexit
import ctypes
import operator
import os
import threading

from . import _lib
from ._errors import EINVAL, KeelTypeError, KeelValueError

MAX_THREADS = 1024  # keel.h's KEEL_MAX_THREADS: the most threads a context may have
_INT_MIN = -(2**31)


def _thread_count(who, nthreads):
    """nthreads checked before it reaches C: ctypes cuts an int to C's int silently (2**40 became
    0, one thread per core). An int (not a bool) <= MAX_THREADS; <= 0 means one per core."""
    if isinstance(nthreads, bool):
        raise KeelTypeError(f"{who}: nthreads ({nthreads!r}) must be an int, not a bool", EINVAL)
    try:
        n = operator.index(nthreads)
    except TypeError:
        raise KeelTypeError(f"{who}: nthreads ({nthreads!r}) must be an int", EINVAL) from None
    if n > MAX_THREADS:
        raise KeelValueError(f"{who}: nthreads ({n}) is more than KEEL_MAX_THREADS ({MAX_THREADS})", EINVAL)
    return max(n, _INT_MIN)  # any n <= 0 means one thread per core


class Context:
    def __init__(self, nthreads=0):
        nthreads = _thread_count("keel_ctx_create", nthreads)
        handle = ctypes.c_void_p()
        _lib.check(_lib.lib.keel_ctx_create(ctypes.byref(handle), nthreads))
        self.handle = handle
        self.ptr = handle.value  # the keel_ctx * as an int (quicker to pass); None once closed
        self.lock = threading.Lock()

    def threads(self):
        with self.lock:
            return _lib.lib.keel_ctx_threads(self.handle)

    def set_threads(self, nthreads):
        nthreads = _thread_count("keel_ctx_set_threads", nthreads)
        with self.lock:
            _lib.check(_lib.lib.keel_ctx_set_threads(self.handle, nthreads))

    def isa(self):
        with self.lock:
            return _lib.lib.keel_isa_name(_lib.lib.keel_ctx_isa(self.handle)).decode()

    def call(self, fn, *args):
        """fn(ctx, *args) under the lock; raises on a non-zero status."""
        with self.lock:
            _lib.check(fn(self.handle, *args))

    def close(self):
        with self.lock:
            if self.handle:
                _lib.lib.keel_ctx_destroy(self.handle)
                self.handle, self.ptr = ctypes.c_void_p(), None


_default = None
_default_lock = threading.Lock()
current = None  # the module's context once created (what the calls read: `current or default()`)


def default():
    """The module's context (one thread per core unless set_num_threads said otherwise)."""
    global _default, current
    ctx = _default
    if ctx is None:
        with _default_lock:
            if _default is None:
                _default = current = Context(0)
            ctx = _default
    return ctx


def _close_default():
    if _default is not None:
        _default.close()


atexit.register(_close_default)


def _forget_default_in_child():
    # After fork the parent's worker threads do not exist in the child: its context would hang.
    # Leak it (destroying would join those threads) and make a fresh one on first use.
    global _default, _default_lock, current
    _default, _default_lock, current = None, threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_default_in_child)


# Called with n after set_num_threads(n): other contexts that follow it (keel.torch's operators).
thread_listeners = []


def set_num_threads(n):
    """Threads keel uses for each call (n <= 0: one per online core, at most MAX_THREADS = 1024;
    more is a KeelValueError, a non-int a KeelTypeError). Results do not depend on it."""
    n = _thread_count("set_num_threads", n)
    default().set_threads(n)
    for listener in thread_listeners:
        listener(n)


def get_num_threads():
    return default().threads()
