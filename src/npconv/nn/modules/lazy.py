"""Lazy modules: parameters whose shape is inferred from the first input (torch's LazyModuleMixin)."""

from __future__ import annotations

from typing import Any

from ..parameter import UninitializedParameter

__all__ = ["LazyModuleMixin"]


class LazyModuleMixin:
    """On the first call, ``initialize_parameters(input)`` materialises every
    :class:`UninitializedParameter` and the module becomes ``cls_to_become``."""

    cls_to_become: type | None = None

    def has_uninitialized_params(self) -> bool:
        return any(isinstance(p, UninitializedParameter) for p in self._parameters.values())  # type: ignore[attr-defined]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # bind Module.__call__ first: once the class has become cls_to_become, super() here fails
        call = super().__call__  # type: ignore[misc]
        if self.has_uninitialized_params():
            self.initialize_parameters(*args, **kwargs)  # type: ignore[attr-defined]
            if self.cls_to_become is not None and not self.has_uninitialized_params():
                self.__class__ = self.cls_to_become
        return call(*args, **kwargs)

    def _check_loaded_shape(self, name: str, shape: tuple[int, ...]) -> str | None:
        """Why a checkpoint value of ``shape`` cannot materialise parameter ``name`` (None if it can).

        ``load_state_dict`` asks this before it changes anything; a lazy layer overrides it with
        the shape rule its first forward would apply. The default refuses nothing.
        """
        return None

    def _finish_load_state_dict(self) -> None:
        if not self.has_uninitialized_params() and self.cls_to_become is not None:
            self.in_channels = self._infer_in_channels_from_weight()  # type: ignore[attr-defined]
            self.__class__ = self.cls_to_become
