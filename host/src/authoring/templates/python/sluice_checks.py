"""Checks what a policy's methods return against the WIT types.

Written by `sluice plugin new`. The generated bindings convert what a method
returns into the WIT types after it has returned, and a value of the wrong
type (`cost="1"` where the WIT says `s64`) fails there, in code that names
neither the field nor the policy's line. `@checked` on an exported class
checks each method's return value against the type its interface declares
and raises a TypeError naming the method, the field and the line of the
`return` in the policy, e.g.

    TypeError: Throttle.admit returned a value whose .value[0].cost is '1'
    (str), not int (returned at app.py, line 16)

Unit tests (`python3 -m unittest`) run the same check. It walks each
returned value once; drop the decorator to skip it.
"""

import dataclasses
import dis
import enum
import functools
import os
import re
import typing

__all__ = ["checked"]


def checked(cls):
    """Wraps every method `cls` defines for its interface (a base class
    from `wit_world.exports`) with a check of the returned value."""
    for name, fn in list(vars(cls).items()):
        declared = _declared(cls, name)
        if callable(fn) and declared is not None:
            setattr(cls, name, _wrap(cls.__name__, name, fn, declared))
    return cls


def _declared(cls, name):
    """The return type `name` has in the interface `cls` implements."""
    for base in cls.__mro__[1:]:
        method = vars(base).get(name)
        if method is not None and getattr(method, "__isabstractmethod__", False):
            return typing.get_type_hints(method).get("return", type(None))
    return None


def _wrap(cls_name, name, fn, declared):
    @functools.wraps(fn)
    def method(*args, **kwargs):
        value = fn(*args, **kwargs)
        problem = _problem(value, declared, "")
        if problem is not None:
            path, bad, expected = problem
            what = f"a value whose {path} is" if path else ""
            raise TypeError(
                f"{cls_name}.{name} returned {what}{' ' if what else ''}{bad!r} ({type(bad).__name__}),"
                f" not {expected} (returned at {_returns(fn)})"
            )
        return value

    return method


def _returns(fn):
    """Where `fn` returns: its file and the lines of its `return`s."""
    code = fn.__code__
    lines = sorted(
        {
            i.positions.lineno
            for i in dis.get_instructions(code)
            if i.opname in ("RETURN_VALUE", "RETURN_CONST") and i.positions and i.positions.lineno
        }
    )
    where = os.path.basename(code.co_filename)
    if len(lines) == 1:
        return f"{where}, line {lines[0]}"
    if lines:
        return f"{where}, one of lines {', '.join(map(str, lines))}"
    return f"{where}, line {code.co_firstlineno}"


def _name(tp):
    """`tp` as the bindings spell it: `int`, `Bucket`, `List[Bucket]`."""
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return re.sub(r"\b[\w.]+\.", "", str(tp))


def _problem(value, tp, path):
    """None when `value` converts to `tp`, else what is wrong: the path of
    the offending field, its value and the type it should have."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    wrong = (path, value, _name(tp))
    if tp is type(None):
        return None if value is None else wrong
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        cases = [a for a in args if a is not type(None)]
        for case in cases:
            if isinstance(case, type) and isinstance(value, case):
                return _problem(value, case, path)
        if len(cases) == 1:
            return _problem(value, cases[0], path)
        return (path, value, " or ".join(map(_name, cases)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return wrong
        for i, item in enumerate(value):
            problem = _problem(item, args[0], f"{path}[{i}]")
            if problem is not None:
                return problem
        return None
    if origin is tuple:
        if not isinstance(value, tuple) or len(value) != len(args):
            return wrong
        for i, (item, arg) in enumerate(zip(value, args)):
            problem = _problem(item, arg, f"{path}[{i}]")
            if problem is not None:
                return problem
        return None
    if tp is bool:
        return None if isinstance(value, bool) else wrong
    if tp is int:
        return None if isinstance(value, int) else wrong
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else wrong
    if tp is str:
        return None if isinstance(value, str) else wrong
    if tp is bytes:
        return None if isinstance(value, (bytes, bytearray)) else wrong
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return None if isinstance(value, tp) else wrong
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):
            return wrong
        hints = typing.get_type_hints(tp)
        for field in dataclasses.fields(tp):
            problem = _problem(getattr(value, field.name), hints[field.name], f"{path}.{field.name}")
            if problem is not None:
                return problem
        return None
    # A type this check does not know: the bindings convert it.
    return None
