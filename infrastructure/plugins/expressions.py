"""The expression language of Data_Processing.filter and .transform.

Python expression syntax, evaluated by simpleeval over a checked syntax tree; user text
is never given to eval(). An expression is parsed and checked once (`Expression(text)`,
which is also how Plugin.check reports problems at pipeline write time) and then
evaluated per record.

- Names are the record's fields; a missing field is null. `true`, `false`, `null`
  (and Python's True, False, None) are constants; field("any name") reads a field
  whose name is not an identifier.
- x["key"] / x[0] read nested values; a missing key or index, or indexing null,
  gives null, so `customer["address"]["city"]` is null when any part is missing.
- Arithmetic + - * / // % **, comparisons, `in`, `and` / `or` / `not`, `a if c else
  b`, list, tuple, dict literals. `is` and `is not` compare like == and != (for `x is
  null`). Using null in arithmetic or an ordering comparison (`amount > 10` with no
  amount) is an error for that record: write `coalesce(amount, 0) > 10` or
  `amount != null and amount > 10`.
- Refused: attribute access (x.y), names starting with '__', lambda, comprehensions,
  f-strings, assignment, imports and any other statement.
- Limits: strings and lists built by an expression at most MAX_LENGTH items, integers
  at most MAX_INT_BITS bits, round() to at most 100 digits.
"""

from __future__ import annotations

import ast
import operator as op
from collections.abc import Callable
from typing import Any

import msgspec
from simpleeval import EvalWithCompoundTypes

from infrastructure.plugins.base import Record

MAX_LENGTH = 100_000
MAX_INT_BITS = 100_000
MAX_DEPTH = 64
CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False}


class ExpressionError(ValueError):
    """The expression cannot be used (at check time) or failed on a record."""


# --- safe operators ----------------------------------------------------------------------


def _sized(value: Any) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > MAX_LENGTH:
        raise ExpressionError(f"result longer than {MAX_LENGTH} items")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"number larger than {MAX_INT_BITS} bits")
    return value


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, str | list | tuple) and isinstance(b, str | list | tuple):
        if len(a) + len(b) > MAX_LENGTH:
            raise ExpressionError(f"result longer than {MAX_LENGTH} items")
    return _sized(a + b)


def _mul(a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            if len(seq) * times > MAX_LENGTH:
                raise ExpressionError(f"result longer than {MAX_LENGTH} items")
    if isinstance(a, int) and isinstance(b, int):
        if a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise ExpressionError(f"number larger than {MAX_INT_BITS} bits")
    return a * b


def _pow(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        if b * a.bit_length() > MAX_INT_BITS:
            raise ExpressionError(f"number larger than {MAX_INT_BITS} bits")
    return a**b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):  # printf-style formatting can build huge strings
        raise ExpressionError("% is for numbers")
    return a % b


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _add,
    ast.Sub: op.sub,
    ast.Mult: _mul,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
    ast.USub: op.neg,
    ast.UAdd: op.pos,
    ast.Not: op.not_,
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Lt: op.lt,
    ast.LtE: op.le,
    ast.Gt: op.gt,
    ast.GtE: op.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: op.eq,
    ast.IsNot: op.ne,
}

# --- functions ---------------------------------------------------------------------------


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ExpressionError(f"{name}() needs a string, got {_kind(value)}")
    return value


def _round(value: Any, digits: int = 0) -> Any:
    if not isinstance(digits, int) or abs(digits) > 100:
        raise ExpressionError("round(x, n) needs n between -100 and 100")
    return round(value) if digits == 0 else round(value, digits)


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | dict | list | tuple):
        return _sized(msgspec.json.encode(value).decode())
    return str(value)


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "lower": lambda s: _text("lower", s).lower(),
    "upper": lambda s: _text("upper", s).upper(),
    "strip": lambda s: _text("strip", s).strip(),
    "startswith": lambda s, prefix: _text("startswith", s).startswith(prefix),
    "endswith": lambda s, suffix: _text("endswith", s).endswith(suffix),
    "round": _round,
    "abs": abs,
    "int": int,
    "float": float,
    "str": _str,
    "bool": bool,
    "min": min,
    "max": max,
    "coalesce": _coalesce,
    "field": None,  # bound per evaluator: reads the current record
}

# --- checking the syntax tree ------------------------------------------------------------

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.BinOp, ast.UnaryOp, ast.Compare,
    ast.IfExp, ast.Call, ast.Name, ast.Load, ast.Constant, ast.Subscript, ast.Slice,
    ast.List, ast.Tuple, ast.Dict, *OPERATORS,
)  # fmt: skip
_REFUSED = {
    ast.Attribute: "attribute access (x.y) is not allowed; use functions such as lower(x), "
    'or x["key"] for nested values',
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not supported; use + and str()",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "* unpacking is not allowed",
    ast.Await: "await is not allowed",
    ast.Set: "set literals are not supported; use a list",
}


def _check_tree(tree: ast.Expression) -> None:
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(f"nested more than {MAX_DEPTH} levels deep")
        if type(node) in _REFUSED:
            raise ExpressionError(_REFUSED[type(node)])
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"{_describe(node)} is not supported")
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise ExpressionError(f"names starting with '__' are not allowed ({node.id})")
        if isinstance(node, ast.Call):
            _check_call(node)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check_call(node: ast.Call) -> None:
    if isinstance(node.func, ast.Attribute):
        raise ExpressionError(_REFUSED[ast.Attribute])
    if not isinstance(node.func, ast.Name):
        raise ExpressionError("only named functions may be called")
    if node.func.id not in FUNCTIONS:
        raise ExpressionError(
            f"unknown function {node.func.id!r}; available: {', '.join(sorted(FUNCTIONS))}"
        )
    if node.keywords:
        raise ExpressionError(f"{node.func.id}() takes no keyword arguments")


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.operator | ast.unaryop | ast.cmpop):
        return f"the operator {type(node).__name__}"
    return type(node).__name__


# --- evaluation --------------------------------------------------------------------------


class _Evaluator(EvalWithCompoundTypes):
    def __init__(self) -> None:
        functions = dict(FUNCTIONS, field=self._field)
        super().__init__(operators=OPERATORS, functions=functions, names={})
        for refused in (ast.Attribute, ast.ListComp, ast.DictComp, ast.GeneratorExp):
            self.nodes.pop(refused, None)  # defence in depth: _check_tree refuses them
        self.record: Record = {}

    def _field(self, name: Any) -> Any:
        return self.record.get(name) if isinstance(name, str) else None

    def _eval_name(self, node: ast.Name) -> Any:
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id == "None":
            return None
        return self.record.get(node.id)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if container is None:
            return None
        if isinstance(container, dict):
            return container.get(key) if _hashable(key) else None
        try:
            return container[key]
        except IndexError:
            return None


class Expression:
    """One expression, parsed and checked once, evaluated per record."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as error:
            column = f" at column {error.offset}" if error.offset else ""
            detail = "" if error.msg == "invalid syntax" else f": {error.msg}"
            raise ExpressionError(f"invalid syntax{column}{detail}") from None
        except (RecursionError, MemoryError, ValueError) as error:
            raise ExpressionError(f"cannot parse: {type(error).__name__}") from None
        _check_tree(tree)
        self._body = tree.body
        self._evaluator = _Evaluator()

    def evaluate(self, record: Record) -> Any:
        """The value for `record`, or ExpressionError saying why it has none."""
        self._evaluator.record = record
        try:
            return self._evaluator.eval(self.text, previously_parsed=self._body)
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError("nested too deeply") from None
        except Exception as error:  # any failure of user code is this record's error
            raise ExpressionError(_readable(error)) from None


def expression_problem(text: str) -> str | None:
    """Why `text` is not a usable expression, or None."""
    try:
        Expression(text)
    except ExpressionError as error:
        return str(error)
    return None


def referenced_fields(text: str) -> frozenset[str]:
    """The record fields an expression reads: its names (constants and functions
    aside) and field("literal") arguments; for `customer["city"]`, customer. Raises
    ExpressionError for an expression that is not usable."""
    Expression(text)  # the same checks as at write time
    tree = ast.parse(text.strip(), mode="eval")
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in called and node.id not in CONSTANTS:
            if node.id != "None":
                names.add(node.id)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "field"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return frozenset(names)


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | tuple) or value is None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value).__name__, type(value).__name__)


_TYPE_NAMES = {
    "NoneType": "null", "str": "string", "int": "number", "float": "number",
    "bool": "boolean", "dict": "object", "list": "list", "tuple": "list",
}  # fmt: skip


def _readable(error: Exception) -> str:
    text = str(error) or type(error).__name__
    for python, ours in _TYPE_NAMES.items():
        text = text.replace(f"'{python}'", ours)
    if isinstance(error, ZeroDivisionError):
        text = "division by zero"
    elif isinstance(error, TypeError) and "null" in text:
        text += " (a missing field is null: see coalesce())"
    return text
