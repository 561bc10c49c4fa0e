"""Exception classes: each is both a builtin error and a ``BnbError`` so callers can catch either."""


class BnbError(Exception):
    """Base class of every error raised by bnb_api."""


class BnbValueError(ValueError, BnbError):
    """An argument has a wrong value (shape, blocksize, quant type, ...)."""


class BnbTypeError(TypeError, BnbError):
    """An argument has a wrong type or dtype."""


class BnbUnavailableError(RuntimeError, BnbError):
    """An implementation is not available in this build or on this device."""
