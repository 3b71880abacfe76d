"""Single-use secret state: records that refuse to be copied, pickled or rebuilt.

A FROST secret nonce or a DKLs23 presignature signs once: a second signature
with the same nonce state on another message, signer set or co-signer nonce
gives linear equations in the nonce and the secret share, and three of them
give the share (two for ECDSA's phi). Single use is enforced by the state
itself (a wiped nonce, a spent flag); it only holds if the state has exactly
one instance. So these records are not dataclasses (``dataclasses.replace``,
``fields`` and ``asdict`` refuse them), have ``__slots__`` (no ``__dict__`` to
lift), and raise ``StateCopyError`` on ``copy.copy``, ``copy.deepcopy`` and
``pickle`` (``__copy__``, ``__deepcopy__``, ``__reduce_ex__``).
"""

from __future__ import annotations

import dataclasses
from typing import NoReturn, SupportsIndex, TypeVar, dataclass_transform

from tss.errors import StateCopyError

__all__ = ["SingleUse", "single_use"]

T = TypeVar("T", bound="SingleUse")


class SingleUse:
    """Base of single-use secret state: every way to duplicate an instance raises."""

    __slots__ = ()

    def _refuse(self) -> NoReturn:
        raise StateCopyError(
            f"{type(self).__name__} is single-use secret state: it is never copied"
        )

    def __copy__(self) -> NoReturn:
        self._refuse()

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._refuse()

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        self._refuse()

    def __reduce__(self) -> NoReturn:
        self._refuse()


@dataclass_transform(eq_default=False, frozen_default=True, field_specifiers=(dataclasses.field,))
def single_use(cls: type[T]) -> type[T]:
    """Make ``cls`` (a ``SingleUse`` with annotated fields) a frozen, slotted record.

    The fields work as in a frozen dataclass (positional ``__init__``, defaults,
    ``field(repr=False)``, no attribute assignment), but the class is not a
    dataclass afterwards, so nothing can rebuild an instance from its fields.
    """
    made = dataclasses.dataclass(frozen=True, slots=True, eq=False)(cls)
    for name in (
        "__dataclass_fields__",
        "__dataclass_params__",
        "__replace__",
        "__getstate__",
        "__setstate__",
    ):
        if name in vars(made):
            delattr(made, name)
    return made
