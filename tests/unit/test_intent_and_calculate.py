"""Objective → intent rules, and the safe calculator."""

from __future__ import annotations

import pytest

from buddy.domain.intent import RuleBasedClassifier, first_url, strip_calculation_verb
from buddy.tools import ToolContext, ToolError
from buddy.tools.calculate import CalculateTool, evaluate


@pytest.mark.parametrize(
    ("objective", "intent", "confidence"),
    [
        ("calculate 2*(3+4)", "calculate", 0.95),
        ("What is 17 * 3?", "calculate", 0.95),
        ("12 + 30", "calculate", 0.75),
        ("extract the title of https://example.com/page", "extract", 0.95),
        ("https://example.com/page", "extract", 0.8),
        ("find python tutorials", "search", 0.7),
        ("find flights on 2024-05-01", "search", 0.7),
        ("what is 3/4", "calculate", 0.95),
        ("what is the answer", "calculate", 0.4),
        ("hello there", "unknown", 0.1),
    ],
    ids=[
        "calc-verb",
        "what-is",
        "bare-arithmetic",
        "extract-url",
        "bare-url",
        "search",
        "date-is-not-a-sum",
        "fraction",
        "calc-verb-only",
        "unknown",
    ],
)
def test_objective_maps_to_intent(objective: str, intent: str, confidence: float) -> None:
    """Each kind of objective is classified to its intent with a fixed confidence."""
    result = RuleBasedClassifier().classify(objective)
    assert (result.name, result.confidence) == (intent, confidence)
    assert result.reason


def test_unknown_objective_is_below_tool_selection_threshold() -> None:
    """An objective no rule matches has confidence under 0.15."""
    assert RuleBasedClassifier().classify("hello there").confidence < 0.15


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("read https://example.com/a.", "https://example.com/a"),
        ("(see http://x.org/p?q=1)", "http://x.org/p?q=1"),
        ("no link here", None),
    ],
    ids=["trailing-dot", "parenthesised", "none"],
)
def test_first_url_strips_trailing_punctuation(text: str, url: str | None) -> None:
    """The first URL is found without the sentence punctuation around it."""
    assert first_url(text) == url


def test_strip_calculation_verb() -> None:
    """The verb and the trailing question mark are removed from a calculation."""
    assert strip_calculation_verb("What is 17 * 3?") == "17 * 3"


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2*(3+4)", 14),
        ("2^10", 1024),
        ("2**10", 1024),
        ("10/4", 2.5),
        ("sqrt(16)", 4),
        ("-3+5", 2),
        ("7 // 2", 3),
        ("2\u00d73", 6),
        ("6\u00f74", 1.5),
        ("max(1, abs(-9))", 9),
    ],
    ids=[
        "parens",
        "caret-power",
        "power",
        "division",
        "sqrt",
        "negative",
        "floordiv",
        "times-sign",
        "divide-sign",
        "functions",
    ],
)
def test_good_expressions(expression: str, value: float) -> None:
    """Ordinary arithmetic evaluates to the expected number."""
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "division by zero"),
        ("7 % 0", "division by zero"),
        ("9**99999", "Exponent 99999 is too large (limit 1000)"),
        ("2^5000", "Exponent 5000 is too large (limit 1000)"),
        ("10**400", "the result is too large"),
        ("((10**1000)**1000)**1000", "the result is too large"),
        ("__import__('os')", "only numbers can be calculated, not 'os'"),
        ('"a"*3', "only numbers can be calculated, not 'a'"),
        ('"a"*10**10', "only numbers can be calculated, not 'a'"),
        ("open('x')", "only numbers can be calculated, not 'x'"),
        ("lambda: 1", "not an arithmetic expression: 'lambda: 1'"),
        ("(1).__class__", "not an arithmetic expression: '(1).__class__'"),
        ("x + 1", "not an arithmetic expression: 'x + 1'"),
        ("sqrt(-1)", "not an arithmetic expression: 'sqrt(-1)'"),
        ("", "No expression to calculate"),
        ("   ", "No expression to calculate"),
        ("1+" * 299 + "11", "Expression is longer than 500 characters"),
    ],
    ids=[
        "div-zero",
        "mod-zero",
        "huge-exponent",
        "huge-caret",
        "huge-result",
        "nested-powers",
        "import",
        "string",
        "huge-string",
        "open",
        "lambda",
        "dunder-attribute",
        "unknown-name",
        "math-domain",
        "empty",
        "blank",
        "too-long",
    ],
)
def test_hostile_or_invalid_expressions_are_rejected(expression: str, message: str) -> None:
    """Anything but bounded arithmetic raises ToolError with a message for the owner."""
    with pytest.raises(ToolError) as raised:
        evaluate(expression)
    assert str(raised.value) == message


def test_expression_of_exactly_500_characters_is_accepted() -> None:
    """The length limit is inclusive."""
    assert evaluate("1+" * 249 + "11") == 260


def test_calculate_tool_strips_the_verb_and_formats_the_result() -> None:
    """The tool evaluates the objective's expression and returns a calculation result."""
    result = CalculateTool().run(ToolContext("What is 10/4?", {}))
    assert (result.title, result.content, result.type) == ("10/4 = 2.5", "2.5", "calculation")
    assert result.data == {"expression": "10/4", "result": "2.5"}
    assert result.cost_usd == CalculateTool.cost_usd


def test_calculate_tool_prefers_an_explicit_expression_input() -> None:
    """An `expression` input wins over the objective text."""
    result = CalculateTool().run(ToolContext("calculate something", {"expression": "sqrt(16)"}))
    assert result.content == "4"
