"""Neural-network layers, functional forms and initialisers (``npconv.nn``)."""

from . import functional, init, tables, utils
from .modules import *  # noqa: F403
from .modules import __all__ as _modules_all
from .parameter import Buffer, Parameter, UninitializedParameter

__all__ = ["functional", "init", "tables", "utils", "Parameter", "UninitializedParameter", "Buffer",
           *_modules_all]
