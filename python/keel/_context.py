"""The module-level keel context: created on first use, one call at a time.

A keel_ctx (a thread pool and the chosen kernels) may be used by one thread at a time, so every
call through it holds a lock. The calls themselves release the GIL (ctypes does), and keel
spreads each call over the context's threads.
"""

import atexit
import ctypes
import os
import threading

from . import _lib


class Context:
    def __init__(self, nthreads=0):
        handle = ctypes.c_void_p()
        _lib.check(_lib.lib.keel_ctx_create(ctypes.byref(handle), int(nthreads)))
        self.handle = handle
        self.ptr = handle.value  # the keel_ctx * as an int (quicker to pass); None once closed
        self.lock = threading.Lock()

    def threads(self):
        with self.lock:
            return _lib.lib.keel_ctx_threads(self.handle)

    def set_threads(self, nthreads):
        with self.lock:
            _lib.check(_lib.lib.keel_ctx_set_threads(self.handle, int(nthreads)))

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
    """Threads keel uses for each call (n <= 0: one per online core). Results do not depend on it."""
    default().set_threads(n)
    for listener in thread_listeners:
        listener(int(n))


def get_num_threads():
    return default().threads()
