"""Safe arithmetic: a whitelist evaluator over Python's own parser, never `eval`.

Every operation's cost is bounded before it runs. Numbers never exceed MAX_MAGNITUDE,
so an int has at most about 1000 bits and + - * / // % on two of them is cheap; a
power or a rounding whose result could be huge is refused from its logarithm or its
digits, without computing it. (A C-level computation such as 10**(10**8) holds the
GIL for minutes, and the worker's lease heartbeat with it.)
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Annotated, ClassVar

from pydantic import Field

from buddy.domain.intent import CALCULATE, strip_calculation_verb
from buddy.tools.base import ToolContext, ToolError, ToolInputs, ToolResult

Number = int | float

MAX_EXPRESSION_LENGTH = 500
MAX_MAGNITUDE = 1e300
# The longest sum that fits in MAX_EXPRESSION_LENGTH ("1+1+...") nests 250 deep; only
# chains of signs ("--...-1") go deeper. The bound keeps the walk far from Python's
# recursion limit whoever calls it.
MAX_NESTING = 250
MAX_ROUND_DIGITS = 300

ALLOWED = "only numbers, pi, e, + - * / // % ** and sqrt, abs, round, min, max can be used"
TOO_LARGE = "the result would be too large"
NOT_A_NUMBER = "the result is not a number"
NESTED_TOO_DEEPLY = f"the expression is nested more than {MAX_NESTING} levels deep"

# log10 of a power's result above which it is refused without computing it. One over
# log10(MAX_MAGNITUDE), so a result the logarithm puts near the limit is computed (it
# is still small) and then checked exactly.
_POWER_LOG10_LIMIT = math.log10(MAX_MAGNITUDE) + 1
# A product of ints whose bit lengths add to more than this is over MAX_MAGNITUDE.
_PRODUCT_BITS_LIMIT = int(MAX_MAGNITUDE).bit_length() + 1


def _checked(value: Number) -> Number:
    """Every literal, intermediate and result passes here: finite and within MAX_MAGNITUDE."""
    if isinstance(value, float) and math.isnan(value):
        raise ToolError(NOT_A_NUMBER)
    if not abs(value) <= MAX_MAGNITUDE:  # also catches inf
        raise ToolError(TOO_LARGE)
    return value


def _multiply(left: Number, right: Number) -> Number:
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > _PRODUCT_BITS_LIMIT
    ):
        raise ToolError(TOO_LARGE)
    return left * right


def _power(base: Number, exponent: Number) -> Number:
    # |base ** exponent| = 10 ** (exponent * log10|base|): refuse before computing.
    if base != 0 and exponent * math.log10(abs(base)) > _POWER_LOG10_LIMIT:
        raise ToolError(TOO_LARGE)
    try:
        value: Number | complex = base**exponent
    except OverflowError as e:
        raise ToolError(TOO_LARGE) from e
    if isinstance(value, complex):  # (-8) ** 0.5
        raise ToolError("the result is not a real number")
    return value


_BINARY_OPERATORS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
    ast.BitXor: _power,  # people write 2^10 and mean a power
}
_UNARY_OPERATORS: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_OPERATOR_SYMBOLS: dict[type[ast.AST], str] = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}


def _sqrt(*args: Number) -> Number:
    if len(args) != 1:
        raise ToolError("sqrt takes one number")
    if args[0] < 0:
        raise ToolError("the square root of a negative number is not a real number")
    return math.sqrt(args[0])


def _abs(*args: Number) -> Number:
    if len(args) != 1:
        raise ToolError("abs takes one number")
    return abs(args[0])


def _round(*args: Number) -> Number:
    if len(args) not in (1, 2):
        raise ToolError("round takes a number and, optionally, how many digits to keep")
    if len(args) == 1:
        return round(args[0])
    value, digits = args
    if not isinstance(digits, int):
        raise ToolError("round's digits must be a whole number")
    # round(1, -10**8) would compute 10**(10**8).
    if abs(digits) > MAX_ROUND_DIGITS:
        raise ToolError(
            f"round's digits must be between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}"
        )
    return round(value, digits)


def _at_least_two(name: str, args: tuple[Number, ...]) -> tuple[Number, ...]:
    # Given one argument, min and max would iterate over it.
    if len(args) < 2:
        raise ToolError(f"{name} needs at least two numbers")
    return args


def _min(*args: Number) -> Number:
    return min(_at_least_two("min", args))


def _max(*args: Number) -> Number:
    return max(_at_least_two("max", args))


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": _sqrt,
    "abs": _abs,
    "round": _round,
    "min": _min,
    "max": _max,
}
_NAMES: dict[str, Number] = {"pi": math.pi, "e": math.e}


def _refused(node: ast.AST) -> ToolError:
    return ToolError(f"{_describe(node)} is not allowed: {ALLOWED}")


def _describe(node: ast.AST) -> str:
    """What the owner wrote, in words, for a node the evaluator refuses."""
    match node:
        case ast.Constant(value=bool() | None):
            return f"'{node.value!r}'"
        case ast.Constant(value=str() | bytes()):
            return f"the text {node.value!r}"
        case ast.Constant(value=complex()):
            return "a complex number"
        case ast.Name(id=name) | ast.Attribute(attr=name):
            return f"'{name}'"
        case ast.Call(func=func):
            return _describe(func)
        case ast.BinOp(op=op) | ast.UnaryOp(op=op) if type(op) in _OPERATOR_SYMBOLS:
            return f"the operator {_OPERATOR_SYMBOLS[type(op)]}"
        case ast.Compare():
            return "a comparison"
        case ast.BoolOp():
            return "'and' / 'or'"
        case ast.IfExp():
            return "'if ... else'"
        case ast.Subscript():
            return "indexing with [ ]"
        case ast.List() | ast.Tuple() | ast.Set() | ast.Dict():
            return "a list, tuple, set or dict"
        case ast.Lambda():
            return "'lambda'"
        case ast.ListComp() | ast.SetComp() | ast.DictComp() | ast.GeneratorExp():
            return "a comprehension"
        case ast.keyword():
            return "a keyword argument"
        case ast.Starred():
            return "'*' unpacking"
        case ast.JoinedStr():
            return "text"
        case _:
            return "this kind of expression"


def _evaluate_node(node: ast.AST) -> Number:
    match node:
        case ast.Constant(value=int() | float() as value) if not isinstance(value, bool):
            return _checked(value)
        case ast.Name(id=name) if name in _NAMES:
            return _NAMES[name]
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY_OPERATORS:
            return _checked(_UNARY_OPERATORS[type(op)](_evaluate_node(operand)))
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY_OPERATORS:
            left_value, right_value = _evaluate_node(left), _evaluate_node(right)
            return _checked(_BINARY_OPERATORS[type(op)](left_value, right_value))
        case ast.Call(func=ast.Name(id=name), args=args, keywords=keywords) if name in _FUNCTIONS:
            if keywords:
                raise _refused(keywords[0])
            values = [_evaluate_node(arg) for arg in args]
            return _checked(_FUNCTIONS[name](*values))
        case _:
            raise _refused(node)


def _nesting(tree: ast.AST) -> int:
    """How deep the tree goes, counted without recursion."""
    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _parse(text: str) -> ast.expr:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"not an arithmetic expression: {text!r}") from e
    except ValueError as e:  # a null byte, for one
        raise ToolError(f"not an arithmetic expression: {text!r}") from e
    except (RecursionError, MemoryError) as e:
        raise ToolError(NESTED_TOO_DEEPLY) from e
    if _nesting(tree.body) > MAX_NESTING:
        raise ToolError(NESTED_TOO_DEEPLY)
    return tree.body


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; anything else is a ToolError in plain words."""
    text = expression.strip()
    if not text:
        raise ToolError("No expression to calculate")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ToolError(f"Expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    # People paste the typographic signs for times and divide.
    text = text.replace("\u00d7", "*").replace("\u00f7", "/")
    tree = _parse(text)
    try:
        return _evaluate_node(tree)
    except ZeroDivisionError as e:
        raise ToolError("division by zero") from e
    except OverflowError as e:
        raise ToolError(TOO_LARGE) from e
    except RecursionError as e:  # only when called from deep in a stack already
        raise ToolError(NESTED_TOO_DEEPLY) from e


def format_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}" if isinstance(value, float) else str(value)


MAX_SERIES = 50
Expression = Annotated[str, Field(max_length=MAX_EXPRESSION_LENGTH)]


class CalculateInputs(ToolInputs):
    expression: Expression | None = None
    # A series, calculated in order into a table (an objective may give one with ";").
    expressions: Annotated[list[Expression] | None, Field(min_length=1, max_length=MAX_SERIES)] = (
        None
    )


def _series(inputs: CalculateInputs, objective: str) -> list[str]:
    if inputs.expressions:
        return list(inputs.expressions)
    if inputs.expression:
        return [inputs.expression]
    parts = [part.strip() for part in strip_calculation_verb(objective).split(";")]
    if len(parts) > MAX_SERIES:
        raise ToolError(f"At most {MAX_SERIES} expressions at once, not {len(parts)}")
    return [part for part in parts if part] or [""]


class CalculateTool:
    name = "calculate"
    description = "Evaluates an arithmetic expression (+ - * / // % ** and sqrt, abs, round)."
    intents = frozenset({CALCULATE})
    input_model: ClassVar[type[ToolInputs]] = CalculateInputs
    unavailable_reason = None
    cost_usd = 0.0001
    time_budget_seconds: ClassVar[float] = 5.0
    # Bounded as the evaluator is, a child process with CPU and memory limits is the
    # second line of defence against an operation it failed to bound.
    isolated: ClassVar[bool] = True

    def estimate_cost(self, inputs: ToolInputs) -> float:
        return self.cost_usd

    def run(self, context: ToolContext) -> ToolResult:
        inputs = CalculateInputs.model_validate(context.inputs)
        series = _series(inputs, context.objective)
        if len(series) > 1:
            return self._table(series)
        expression = series[0]
        result = format_number(evaluate(expression))
        return ToolResult(
            title=f"{expression} = {result}",
            summary=f"{expression} = {result}",
            content=result,
            type="calculation",
            preview=f"{expression} = {result}",
            data={"expression": expression, "result": result},
            cost_usd=self.cost_usd,
        )

    def _table(self, series: list[str]) -> ToolResult:
        """A series of calculations as a table: clients chart it."""
        rows = []
        for number, expression in enumerate(series, 1):
            try:
                rows.append(
                    {"expression": expression, "result": format_number(evaluate(expression))}
                )
            except ToolError as e:
                raise ToolError(f"Expression {number} ({expression}): {e}") from e
        cells = "\n".join(f"| `{r['expression']}` | {r['result']} |" for r in rows)
        return ToolResult(
            title=f"{len(rows)} calculations",
            summary=f"{len(rows)} calculations: "
            + ", ".join(r["result"] for r in rows[:5])
            + ("…" if len(rows) > 5 else ""),
            content=f"| expression | result |\n|---|---|\n{cells}\n",
            type="calculations",
            format="table",
            preview="\n".join(f"{r['expression']} = {r['result']}" for r in rows[:10]),
            data={"table": {"columns": ["expression", "result"], "rows": rows}},
            cost_usd=self.cost_usd,
        )
