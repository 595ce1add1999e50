"""What every per-layer table and report shares: lookup by layer name, with the nearest
names in the error. Plain Python (the NumPy-only ``convlens.conv`` uses it too)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, TypeVar, overload

from convlens.errors import LayerError, unknown_name


class _Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=_Named)
V = TypeVar("V")


class RowTable(Sequence[R]):
    """A sequence of rows with a ``name``, indexed by position or by layer name.

    Subclasses (dataclasses) define the field ``rows``.
    """

    rows: list[R]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[R]:
        return iter(self.rows)

    @overload
    def __getitem__(self, key: int | str) -> R: ...
    @overload
    def __getitem__(self, key: slice) -> Sequence[R]: ...
    def __getitem__(self, key: int | str | slice) -> R | Sequence[R]:
        if isinstance(key, str):
            for row in self.rows:
                if row.name == key:
                    return row
            raise LayerError(unknown_name("layer", key, [r.name for r in self.rows]))
        return self.rows[key]


class ByLayer(Mapping[str, V]):
    """A mapping from layer name to a per-layer result; subclasses (dataclasses) define the
    field ``layers``."""

    layers: dict[str, V]

    def __getitem__(self, key: str) -> V:
        try:
            return self.layers[key]
        except KeyError:
            raise LayerError(unknown_name("layer", key, self.layers)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)
