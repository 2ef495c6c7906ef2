"""The extraction benchmark's metric (bench/extraction.py), on texts small enough to count by
hand, so that its figures rest on a tested definition."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from bench.extraction import DATA, Match, match, score, shingles, tokens

# Four shingles: the cat sat on | cat sat on the | sat on the mat | on the mat today
MARKED = "the cat sat on the mat today"


def test_tokens_are_word_runs_with_their_case() -> None:
    """Punctuation and spaces split and vanish; case stays; letters beyond ASCII count."""
    assert tokens("Größe: 3 m², naïve — «東京»!") == ["Größe", "3", "m²", "naïve", "東京"]


def test_a_short_text_is_one_shingle() -> None:
    """Fewer than four tokens make one shingle of them all; no tokens make none."""
    assert shingles("a b") == Counter({("a", "b"): 1})
    assert shingles(" , ") == Counter()


@pytest.mark.parametrize(
    ("extracted", "expected"),
    [
        pytest.param(MARKED, Match(4, 0, 0), id="identical"),
        pytest.param("The cat, sat on the mat today.", Match(3, 1, 1), id="case-counts"),
        pytest.param("the cat -- sat (on) the mat: today", Match(4, 0, 0), id="punctuation"),
        pytest.param("Home the cat sat on the mat", Match(3, 1, 1), id="menu-added-end-lost"),
        pytest.param("dogs bark at night", Match(0, 1, 4), id="disjoint"),
        pytest.param("", Match(0, 0, 4), id="nothing-extracted"),
    ],
)
def test_shingles_shared_added_and_missed(extracted: str, expected: Match) -> None:
    """tp, fp, fn count 4-token shingles shared with, added to and missing from the marked."""
    assert match(MARKED, extracted) == expected


def test_repeated_shingles_count_as_often_as_they_occur() -> None:
    """Extracting the marked text twice finds it once and adds the rest as noise."""
    found = match("x y z w", "x y z w x y z w")
    assert found == Match(tp=1, fp=4, fn=0)
    assert (found.precision, found.recall) == (0.2, 1.0)


@pytest.mark.parametrize(
    ("found", "precision", "recall", "f1"),
    [
        pytest.param(Match(4, 0, 0), 1.0, 1.0, 1.0, id="perfect"),
        pytest.param(Match(0, 1, 4), 0.0, 0.0, 0.0, id="disjoint"),
        pytest.param(Match(3, 1, 1), 0.75, 0.75, 0.75, id="three-of-four"),
        pytest.param(Match(1, 4, 0), 0.2, 1.0, 1 / 3, id="noisy"),
        pytest.param(Match(0, 0, 0), 1.0, 1.0, 1.0, id="nothing-for-nothing"),
        pytest.param(Match(0, 0, 4), 0.0, 0.0, 0.0, id="nothing-for-something"),
    ],
)
def test_page_scores(found: Match, precision: float, recall: float, f1: float) -> None:
    """A page's precision, recall and F1; empty against empty counts as right."""
    assert (found.precision, found.recall) == (precision, recall)
    assert found.f1 == pytest.approx(f1)


def test_an_empty_page_costs_recall_not_precision() -> None:
    """Precision averages the pages something was extracted from, recall every marked page,
    and F1 is the harmonic mean of the two means (2/3 here, where page F1s average 1/2)."""
    scores = score([match(MARKED, MARKED), match(MARKED, "")])
    assert (scores.precision, scores.recall) == (1.0, 0.5)
    assert scores.f1 == pytest.approx(2 / 3)


def test_scores_over_pages_of_partial_matches() -> None:
    """Means over pages, each weighing the same however long it is."""
    scores = score([Match(3, 1, 1), Match(1, 4, 0)])
    assert scores.precision == pytest.approx((0.75 + 0.2) / 2)
    assert scores.recall == pytest.approx((0.75 + 1.0) / 2)
    assert scores.f1 == pytest.approx(2 * 0.475 * 0.875 / (0.475 + 0.875))


def test_no_pages_score_zero() -> None:
    """An empty run scores 0, not a division error."""
    assert score([]).f1 == 0.0


def test_every_marked_page_is_vendored() -> None:
    """Each ground-truth entry has its page, under the SHA-256 of its URL, and a marked body."""
    truth = json.loads((DATA / "ground-truth.json").read_text(encoding="utf-8"))
    assert len(truth) == 181
    for page_id, entry in truth.items():
        assert page_id == hashlib.sha256(entry["url"].encode()).hexdigest()
        assert tokens(entry["articleBody"])
        assert (DATA / "html" / f"{page_id}.html.gz").is_file()
