"""Objective → intent rules, and the safe calculator."""

from __future__ import annotations

import math

import pytest

from buddy.domain.intent import RuleBasedClassifier, first_url, strip_calculation_verb
from buddy.tools import ToolContext, ToolError
from buddy.tools.calculate import ALLOWED, CalculateTool, evaluate


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
        ("research the Firestore realtime listener limits", "research", 0.75),
        ("Find out how Cloud Run scales", "research", 0.75),
        ("compare Firestore and Datastore", "research", 0.75),
        ("search for research on sleep", "search", 0.7),
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
        "research",
        "find-out-is-research",
        "compare-is-research",
        "research-later-in-a-search",
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
        ("7 % 4", 3),
        ("-2**2", -4),
        ("2**-2", 0.25),
        ("round(3.14159, 2)", 3.14),
        ("round(12345, -2)", 12300),
        ("round(2.5)", 2),
        ("min(3, 1, 2)", 1),
        ("max(1, abs(-9))", 9),
        ("pi*2", 2 * math.pi),
        ("e", math.e),
        ("1e300*1", 1e300),
        ("10**300", 10**300),
        ("(-8)**(1/1)", -8),
        ("10**-400", 0),
        ("(" * 200 + "1" + ")" * 200, 1),
        ("2\u00d73", 6),
        ("6\u00f74", 1.5),
    ],
    ids=[
        "parens",
        "caret-power",
        "power",
        "division",
        "sqrt",
        "negative",
        "floordiv",
        "modulo",
        "power-binds-tighter-than-minus",
        "negative-exponent",
        "round-digits",
        "round-negative-digits",
        "round-half-even",
        "min",
        "functions",
        "pi",
        "e",
        "largest-float-magnitude",
        "largest-int-magnitude",
        "negative-base-whole-exponent",
        "tiny-result-underflows-to-zero",
        "200-nested-parentheses",
        "times-sign",
        "divide-sign",
    ],
)
def test_good_expressions(expression: str, value: float) -> None:
    """Ordinary arithmetic evaluates to the expected number."""
    assert evaluate(expression) == value


TOO_LARGE = "the result would be too large"
NOT_ALLOWED = "is not allowed: " + ALLOWED
DEEP_PARENTHESES = "(" * 201 + "1" + ")" * 201  # Python's parser stops at 200


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # Operations whose cost is refused before it is paid.
        ("round(1, -10**8)", "round's digits must be between -300 and 300"),
        ("round(1, 10**8)", "round's digits must be between -300 and 300"),
        ("round(2.5, 301)", "round's digits must be between -300 and 300"),
        ("round(2.5, 1.5)", "round's digits must be a whole number"),
        ("round(2.5, 2.0)", "round's digits must be a whole number"),
        ("9**9**9", TOO_LARGE),
        ("9**99999", TOO_LARGE),
        ("2^5000", TOO_LARGE),
        ("((10**1000)**1000)**1000", TOO_LARGE),
        ("0.5**-2000", TOO_LARGE),
        ("(10**300)*(10**300)", TOO_LARGE),
        ("10**300*10", TOO_LARGE),
        ("10**301", TOO_LARGE),
        ("1" + "0" * 301, TOO_LARGE),
        ("1e308*10", TOO_LARGE),
        ("1e309", TOO_LARGE),
        ("1e309-1e309", TOO_LARGE),
        ("-(1e308*10)", TOO_LARGE),
        ("1e300/1e-300", TOO_LARGE),
        ("1e300//1e-10", TOO_LARGE),
        ("e**700", TOO_LARGE),
        # Anything but numbers, the arithmetic operators and the five functions.
        ("(1).to_bytes(10**9)", "'to_bytes' " + NOT_ALLOWED),
        ("(1).to_bytes(10**9).count(0)", "'count' " + NOT_ALLOWED),
        ("(2).bit_length()", "'bit_length' " + NOT_ALLOWED),
        ("(1).real", "'real' " + NOT_ALLOWED),
        ("(1).__class__", "'__class__' " + NOT_ALLOWED),
        ('"a"*10', "the text 'a' " + NOT_ALLOWED),
        ('"a"*10**10', "the text 'a' " + NOT_ALLOWED),
        ("b'a'", "the text b'a' " + NOT_ALLOWED),
        ("f'{1}'", "text " + NOT_ALLOWED),
        ("True+1", "'True' " + NOT_ALLOWED),
        ("1j", "a complex number " + NOT_ALLOWED),
        ("2<<10", "the operator << " + NOT_ALLOWED),
        ("6 & 3", "the operator & " + NOT_ALLOWED),
        ("~1", "the operator ~ " + NOT_ALLOWED),
        ("1 < 2", "a comparison " + NOT_ALLOWED),
        ("1 or 2", "'and' / 'or' " + NOT_ALLOWED),
        ("1 if 1 else 2", "'if ... else' " + NOT_ALLOWED),
        ("[1][0]", "indexing with [ ] " + NOT_ALLOWED),
        ("(1, 2)", "a list, tuple, set or dict " + NOT_ALLOWED),
        ("[x for x in (1, 2)]", "a comprehension " + NOT_ALLOWED),
        ("lambda: 1", "'lambda' " + NOT_ALLOWED),
        ("(lambda: 1)()", "'lambda' " + NOT_ALLOWED),
        ("__import__('os')", "'__import__' " + NOT_ALLOWED),
        ("open('x')", "'open' " + NOT_ALLOWED),
        ("x + 1", "'x' " + NOT_ALLOWED),
        ("round(1.5, ndigits=1)", "a keyword argument " + NOT_ALLOWED),
        ("max(*(1, 2))", "'*' unpacking " + NOT_ALLOWED),
        # The functions' own rules.
        ("min(5)", "min needs at least two numbers"),
        ("max()", "max needs at least two numbers"),
        ("sqrt(4, 9)", "sqrt takes one number"),
        ("round()", "round takes a number and, optionally, how many digits to keep"),
        ("sqrt(-1)", "the square root of a negative number is not a real number"),
        ("(-8)**0.5", "the result is not a real number"),
        ("(-8)**(1/3)", "the result is not a real number"),
        ("1/0", "division by zero"),
        ("1%0", "division by zero"),
        ("7 // 0.0", "division by zero"),
        ("0**-1", "division by zero"),
        # Shape and size.
        (DEEP_PARENTHESES, f"not an arithmetic expression: {DEEP_PARENTHESES!r}"),
        ("-" * 499 + "1", "the expression is nested more than 250 levels deep"),
        ("1 +", "not an arithmetic expression: '1 +'"),
        ("1\x00", "not an arithmetic expression: '1\\x00'"),
        ("", "No expression to calculate"),
        ("   ", "No expression to calculate"),
        ("1+" * 299 + "11", "Expression is longer than 500 characters"),
    ],
    ids=[
        "round-huge-negative-digits",
        "round-huge-digits",
        "round-301-digits",
        "round-fractional-digits",
        "round-float-digits",
        "tower-of-powers",
        "huge-exponent",
        "huge-caret",
        "nested-powers",
        "small-base-negative-exponent",
        "product-of-huge-ints",
        "int-over-magnitude",
        "power-over-magnitude",
        "int-literal-over-magnitude",
        "float-overflow",
        "float-literal-is-inf",
        "inf-minus-inf",
        "negated-overflow",
        "division-overflow",
        "floordiv-overflow",
        "e-power-overflow",
        "method-call",
        "chained-method-call",
        "bit-length",
        "attribute",
        "dunder-attribute",
        "string",
        "huge-string",
        "bytes",
        "f-string",
        "bool",
        "complex",
        "shift",
        "bit-and",
        "invert",
        "comparison",
        "boolean-op",
        "conditional",
        "subscript",
        "tuple",
        "comprehension",
        "lambda",
        "lambda-call",
        "import",
        "open",
        "unknown-name",
        "keyword-argument",
        "star-args",
        "min-one-argument",
        "max-no-argument",
        "sqrt-two-arguments",
        "round-no-argument",
        "sqrt-negative",
        "negative-base-square-root",
        "negative-base-cube-root",
        "div-zero",
        "mod-zero",
        "floordiv-float-zero",
        "zero-negative-power",
        "201-nested-parentheses",
        "500-nested-signs",
        "incomplete",
        "null-byte",
        "empty",
        "blank",
        "too-long",
    ],
)
def test_hostile_or_invalid_expressions_are_rejected(expression: str, message: str) -> None:
    """Anything but bounded arithmetic raises ToolError with a message for the owner.

    None of these can be slow: each is refused at parsing, at a whitelist check, or
    from a bound checked before the operation runs.
    """
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


def test_longest_sum_is_within_the_nesting_limit() -> None:
    """A 500-character sum, the deepest left-nested expression that fits, evaluates."""
    assert evaluate("1+" * 249 + "11") == 260
    assert evaluate("2*" * 249 + "1") == 2**249


def test_calculate_tool_shows_overflow_in_the_owners_words() -> None:
    """An overflowing calculation fails with the message the step shows."""
    with pytest.raises(ToolError, match=r"^the result would be too large$"):
        CalculateTool().run(ToolContext("calculate 1e308*10", {}))


def test_calculate_tool_runs_isolated_within_a_time_budget() -> None:
    """The calculator declares itself for a child process, with a 5 s budget."""
    assert (CalculateTool.isolated, CalculateTool.time_budget_seconds) == (True, 5.0)


def test_calculate_tool_prefers_an_explicit_expression_input() -> None:
    """An `expression` input wins over the objective text."""
    result = CalculateTool().run(ToolContext("calculate something", {"expression": "sqrt(16)"}))
    assert result.content == "4"


def test_a_series_of_calculations_is_a_table() -> None:
    """Expressions separated by ";" (or given as `expressions`) come out as a table, in order,
    with the same table in Markdown for clients that only read Markdown."""
    result = CalculateTool().run(ToolContext("calculate 2*3; 10/4; 2**10", {}))
    assert (result.type, result.format, result.title) == ("calculations", "table", "3 calculations")
    assert result.data["table"] == {
        "columns": ["expression", "result"],
        "rows": [
            {"expression": "2*3", "result": "6"},
            {"expression": "10/4", "result": "2.5"},
            {"expression": "2**10", "result": "1024"},
        ],
    }
    assert result.content.splitlines()[:3] == [
        "| expression | result |",
        "|---|---|",
        "| `2*3` | 6 |",
    ]
    given = CalculateTool().run(ToolContext("calculate", {"expressions": ["1+1", "3*3"]}))
    assert [row["result"] for row in given.data["table"]["rows"]] == ["2", "9"]
    assert RuleBasedClassifier().classify("x", {"expressions": ["1+1"]}).name == "calculate"


def test_a_series_names_the_expression_that_failed() -> None:
    with pytest.raises(ToolError, match=r"^Expression 2 \(1/0\): division by zero$"):
        CalculateTool().run(ToolContext("calculate 1+1; 1/0; 2+2", {}))
    with pytest.raises(ToolError, match="At most 50 expressions"):
        CalculateTool().run(ToolContext("calculate " + "; ".join(["1"] * 51), {}))


def test_a_research_objective_goes_to_research_unless_its_owner_picked_web_search() -> None:
    """research serves the research intent first; web_search serves it too, so an owner who
    picks it for "research …" gets a search (as before research existed), not a report."""
    from buddy.tools import default_registry

    registry = default_registry()
    research = registry.for_intent("research")
    assert research is not None and research.name == "research"
    web_search = registry.get("web_search")
    assert web_search is not None and "research" in web_search.intents
