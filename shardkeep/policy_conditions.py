"""Policy conditions in the Common Expression Language, compiled once and evaluated fail-closed.

Shared: the enclave compiles and evaluates with it (``enclave.policy``), a
client checks a policy file with it before submitting (``shardkeep policy
show``); the enclave's check is the one that counts.

The CEL runtime is ``common-expression-language`` (Python bindings of the
Rust ``cel`` crate), chosen over ``cel-python``: it is native and
memory-safe, evaluates a condition in tens of microseconds where the
pure-Python interpreter takes far longer (the goal is under 1 ms per
signature, every policy included), and it reports the names an expression
uses without evaluating it, which is what lets a bad policy be refused at
submission. Its CLI dependencies (typer, rich) are imported but never used.

Before the native parser sees a condition it is bounded: at most
``MAX_CONDITION_CHARS`` characters, ``MAX_NESTING`` levels of brackets and
``MAX_COMPREHENSIONS`` comprehension macros (a macro iterates a list from
the transaction; two nested ones are already quadratic in it). A condition
may name only the documented roots (``ROOTS``) and the variables its own
macros bind.

Numbers: the runtime turns a Python int of 2^64 or more into a double
silently, so ``enclave.policy.facts`` never hands it one of 2^63 or more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import cel

from shardkeep.policyset import InvalidPolicy

__all__ = ["ConditionError", "Condition", "compile_condition", "ROOTS"]

ROOTS: Final = frozenset({"activity", "eth", "solana", "btc"})
MAX_CONDITION_CHARS: Final = 4096
MAX_NESTING: Final = 32
MAX_COMPREHENSIONS: Final = 2
_MACRO: Final = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


class ConditionError(Exception):
    """A condition failed to evaluate or gave no bool (the reason is the runtime's)."""


@dataclass(frozen=True)
class Condition:
    """A compiled condition and its source (shown in denials)."""

    source: str
    program: cel.Program

    def holds(self, context: cel.Context) -> bool:
        """Evaluate; True or False, never anything else.

        Raises:
            ConditionError: the runtime failed (a missing field, a type error,
                an overflow) or the result is not a bool.
        """
        try:
            result: Any = self.program.execute(context)
        except Exception as e:  # the runtime raises several types; any failure is one outcome
            raise ConditionError(f"{type(e).__name__}: {e}") from e
        if not isinstance(result, bool):
            raise ConditionError(f"the condition gave {type(result).__name__}, not bool")
        return result

    def names(self, literal: str) -> bool:
        """Whether the source spells ``literal`` as a string literal (``'SIGN_RAW_DIGEST'``)."""
        return re.search(rf"(['\"]){re.escape(literal)}\1", self.source) is not None


def _nesting(source: str) -> int:
    depth = deepest = 0
    for c in source:  # brackets inside string literals count too: conservative
        if c in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]}":
            depth -= 1
    return deepest


def compile_condition(policy_name: str, source: str) -> Condition:
    """Check a condition's bounds and names, and compile it.

    Raises:
        InvalidPolicy: too long, too deeply nested, too many macros, a syntax
            error, or a name that is neither a root nor bound by its own macro.
    """
    if not source.strip():
        raise InvalidPolicy(policy_name, "the condition is empty (write `true` to match always)")
    if len(source) > MAX_CONDITION_CHARS:
        raise InvalidPolicy(policy_name, f"the condition exceeds {MAX_CONDITION_CHARS} characters")
    if _nesting(source) > MAX_NESTING:
        raise InvalidPolicy(policy_name, f"the condition nests deeper than {MAX_NESTING} levels")
    bound = set(_MACRO.findall(source))
    if len(_MACRO.findall(source)) > MAX_COMPREHENSIONS:
        raise InvalidPolicy(
            policy_name, f"the condition uses more than {MAX_COMPREHENSIONS} comprehension macros"
        )
    try:
        program = cel.compile(source)
    except Exception as e:  # the parser reports syntax errors as ValueError; any failure refuses
        raise InvalidPolicy(policy_name, f"the condition does not compile: {e}") from e
    unknown = sorted(set(program.variables()) - ROOTS - bound)
    if unknown:
        raise InvalidPolicy(
            policy_name,
            f"the condition names {', '.join(unknown)}; it may use {', '.join(sorted(ROOTS))}",
        )
    return Condition(source, program)
