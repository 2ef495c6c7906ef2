"""Safe arithmetic: a whitelist evaluator (simpleeval), never `eval`."""

from __future__ import annotations

import ast
import math
import operator
from typing import Annotated, Any

import simpleeval
from pydantic import Field

from buddy.domain.intent import CALCULATE, strip_calculation_verb
from buddy.tools.base import ToolContext, ToolError, ToolInputs, ToolResult

MAX_EXPRESSION_LENGTH = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e300


def _bounded_power(base: Any, exponent: Any) -> Any:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"Exponent {exponent} is too large (limit {MAX_EXPONENT})")
    # Refuse before computing: nested powers like (10**1000)**1000 would never finish.
    if base and exponent > 0 and exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise ToolError("the result is too large")
    return operator.pow(base, exponent)


def _numbers_only(text: str) -> None:
    """Strings, bytes and other literals have no place in arithmetic ("a"*10**9 and the like)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"not an arithmetic expression: {text!r}") from e
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            raise ToolError(f"only numbers can be calculated, not {node.value!r}")


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _bounded_power,
    ast.BitXor: _bounded_power,  # people write 2^10 and mean a power
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max}
_NAMES = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> int | float:
    text = expression.strip()
    if not text:
        raise ToolError("No expression to calculate")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ToolError(f"Expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    # People paste the typographic signs for times and divide.
    text = text.replace("\u00d7", "*").replace("\u00f7", "/")
    _numbers_only(text)
    evaluator = simpleeval.SimpleEval(operators=_OPERATORS, functions=_FUNCTIONS, names=_NAMES)
    try:
        value = evaluator.eval(text)
    except ToolError:
        raise
    except ZeroDivisionError as e:
        raise ToolError("division by zero") from e
    except (simpleeval.InvalidExpression, SyntaxError, TypeError, ValueError) as e:
        raise ToolError(f"not an arithmetic expression: {text!r}") from e
    except OverflowError as e:
        raise ToolError("the result is too large") from e
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"not an arithmetic expression: {text!r}")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError("the result is too large")
    return value


def format_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}" if isinstance(value, float) else str(value)


class CalculateInputs(ToolInputs):
    expression: Annotated[str | None, Field(max_length=MAX_EXPRESSION_LENGTH)] = None


class CalculateTool:
    name = "calculate"
    description = "Evaluates an arithmetic expression (+ - * / // % ** and sqrt, abs, round)."
    intents = frozenset({CALCULATE})
    input_model = CalculateInputs
    unavailable_reason = None
    cost_usd = 0.0001

    def estimate_cost(self, inputs: ToolInputs) -> float:
        return self.cost_usd

    def run(self, context: ToolContext) -> ToolResult:
        inputs = CalculateInputs.model_validate(context.inputs)
        expression = inputs.expression or strip_calculation_verb(context.objective)
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
