"""Objective → intent, by transparent rules, behind a small interface."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from buddy.domain.mission import Intent

CALCULATE, EXTRACT, SEARCH, UNKNOWN = "calculate", "extract", "search", "unknown"
RESEARCH = "research"

_URL = re.compile(r"https?://\S+", re.IGNORECASE)
_DATE_OR_TIME = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}:\d{2}(:\d{2})?\b")
_ARITHMETIC = re.compile(r"\d\s*(\*\*|[-+*/%^])\s*[\d(]|\(\s*\d")
_CALC_VERBS = re.compile(r"^\s*(calculate|compute|evaluate|what is|what's|how much is)\b", re.I)
_EXTRACT_VERBS = re.compile(r"\b(extract|summari[sz]e|read|scrape|fetch|get the)\b", re.I)
_SEARCH_VERBS = re.compile(r"\b(find|search|look up|lookup|discover|list)\b", re.I)
# Before the search verbs: "find out" is research, "find" alone a search.
# At the start only: "search for research on sleep" is a search.
_RESEARCH_VERBS = re.compile(r"^\s*(please\s+)?(research|find\s+out|compare)\b", re.I)


class IntentClassifier(Protocol):
    def classify(self, objective: str, inputs: Mapping[str, Any] | None = None) -> Intent: ...


# Tool arguments that say outright what the owner wants done.
_INPUT_INTENTS = {
    "url": EXTRACT,
    "expression": CALCULATE,
    "expressions": CALCULATE,
    "max_sources": RESEARCH,
    "query": SEARCH,
}


class RuleBasedClassifier:
    """Cheap, explainable rules; an LLM classifier can replace it behind the same protocol."""

    def classify(self, objective: str, inputs: Mapping[str, Any] | None = None) -> Intent:
        for key, intent in _INPUT_INTENTS.items():
            if (inputs or {}).get(key):
                return Intent(intent, 0.9, f"the inputs give a {key}")
        if _URL.search(objective):
            if _EXTRACT_VERBS.search(objective):
                return Intent(EXTRACT, 0.95, "a URL and an extraction verb")
            return Intent(EXTRACT, 0.8, "the objective names a URL")
        # Dates and times (2024-05-01, 10:30) are not sums.
        arithmetic = _ARITHMETIC.search(_DATE_OR_TIME.sub(" ", objective))
        if arithmetic and _CALC_VERBS.search(objective):
            return Intent(CALCULATE, 0.95, "a calculation verb and an arithmetic expression")
        if _RESEARCH_VERBS.search(objective):
            return Intent(RESEARCH, 0.75, "a research verb")
        if _SEARCH_VERBS.search(objective):
            return Intent(SEARCH, 0.7, "a search verb")
        if arithmetic:
            return Intent(CALCULATE, 0.75, "an arithmetic expression")
        if _CALC_VERBS.search(objective):
            return Intent(CALCULATE, 0.4, "a calculation verb without an expression")
        return Intent(UNKNOWN, 0.1, "no rule matched")


def first_url(text: str) -> str | None:
    match = _URL.search(text)
    return match.group(0).rstrip(".,;:!?)\"'") if match else None


def strip_calculation_verb(objective: str) -> str:
    return _CALC_VERBS.sub("", objective).strip().rstrip("?=").strip()
