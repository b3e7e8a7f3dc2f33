"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
#: Ops that make the host wait for an accelerator (a device-to-host copy of a value).
SYNC_OPS = frozenset(
    {
        aten._local_scalar_dense.default,
        aten.item.default,
        aten.is_nonzero.default,
        aten.nonzero.default,
        aten.masked_select.default,
    }
)


class HostSyncCounter(TorchDispatchMode):
    """Record the ops run inside it that would make the host wait for an accelerator."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        bool_index = func is aten.index.Tensor and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ()
        )
        if func in SYNC_OPS or bool_index:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def count_host_syncs() -> Callable[[Callable[[], object]], list[str]]:
    """``count_host_syncs(fn)``: run ``fn`` and return the host-syncing ops it ran."""

    def count(fn: Callable[[], object]) -> list[str]:
        with HostSyncCounter() as counter:
            fn()
        return counter.ops

    return count
