"""bnb_api.core: the op contract (schemas, checks, fakes), the device registry and the reference."""

from bnb_api.core import ops, registry  # noqa: F401  (defines the torch.library ops)
from bnb_api.core.errors import BnbError, BnbTypeError, BnbUnavailableError, BnbValueError

__all__ = ["ops", "registry", "BnbError", "BnbTypeError", "BnbValueError", "BnbUnavailableError"]
