"""The validators shared by archs, datasets and options: each raises one ValueError naming the key at fault.

Every message has the form ``<key>: expected <what>, got <value>`` (or ``<key>: unknown key; did you mean
<close>?``), so a bad value anywhere reads the same and the runner can print it as one line.
"""
import difflib
from typing import Any, Iterable, Optional, Sequence


def is_int(value: Any) -> bool:
    """An int that is not a bool (YAML's ``true`` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def expect_int(key: str, value: Any, minimum: Optional[int] = None) -> int:
    """``value`` if it is an int >= ``minimum`` (when given)."""
    if not is_int(value) or (minimum is not None and value < minimum):
        what = {None: 'an int', 0: 'a non-negative int', 1: 'a positive int'}.get(minimum, f'an int >= {minimum}')
        raise ValueError(f'{key}: expected {what}, got {value!r}')
    return value


def expect_number(key: str, value: Any, low: Optional[float] = None, high: Optional[float] = None,
                  low_open: bool = False, high_open: bool = True) -> float:
    """``value`` if it is a number in the interval given (bounds optional; ``[low, high)`` by default)."""
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is None and high is None:
            what = 'a number'
        elif high is None:
            what = 'a positive number' if low == 0 and low_open else f'a number {">" if low_open else ">="} {low}'
        else:
            what = f'a number in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
        raise ValueError(f'{key}: expected {what}, got {value!r}')
    return value


def expect_bool(key: str, value: Any) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f'{key}: expected true/false, got {value!r}')
    return value


def expect_choice(key: str, value: Any, choices: Sequence) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f'{key}: expected one of {list(choices)}, got {value!r}{did_you_mean(value, choices)}')
    return value


def did_you_mean(word: Any, known: Iterable) -> str:
    """``'; did you mean X?'`` for the closest of ``known`` to ``word`` (empty when none is close)."""
    if not isinstance(word, str):
        return ''
    close = difflib.get_close_matches(word, [k for k in known if isinstance(k, str)], n=1, cutoff=0.6)
    return f'; did you mean {close[0]}?' if close else ''


def check_known_keys(section: str, mapping: Any, known: Iterable[str]) -> None:
    """Reject the first key of ``mapping`` that is not in ``known``.

    Args:
        section: The dotted name of the mapping (``train``, ``datasets.train``), used in the message.
        mapping: The option mapping to check.
        known: Every key allowed there.

    Raises:
        ValueError: ``<section>.<key>: unknown key; did you mean <close>?`` (or the known keys when none is close).
    """
    known = list(known)
    for key in mapping:
        if key not in known:
            hint = did_you_mean(key, known) or f'; known keys: {", ".join(sorted(map(str, known)))}'
            raise ValueError(f'{section}.{key}: unknown key{hint}')
