"""Neural-network layers, functional forms and initialisers (``npconv.nn``)."""

from . import functional, init
from .modules import *  # noqa: F403
from .modules import __all__ as _modules_all
from .parameter import Buffer, Parameter, UninitializedParameter

__all__ = ["functional", "init", "Parameter", "UninitializedParameter", "Buffer", *_modules_all]

from . import tables  # noqa: E402

__all__ += ["tables"]

from . import utils  # noqa: E402

__all__ += ["utils"]
