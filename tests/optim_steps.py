"""A helper of the optimizer tests: steps with given gradients on a given number of worker threads."""

from __future__ import annotations

import npconv


def step_with(optimizer, param, grads, threads: int) -> None:
    """``optimizer.step()`` once per gradient in ``grads`` (a copy set as ``param.grad``) with ``threads``
    worker threads, the previous count restored after."""
    previous = npconv.get_num_threads()
    npconv.set_num_threads(threads)
    try:
        for g in grads:
            param.grad = npconv.tensor(g.copy(order="K"))  # the layout kept
            optimizer.step()
    finally:
        npconv.set_num_threads(previous)
