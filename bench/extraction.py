"""Extraction quality: how much of a page's article each extractor keeps, and how much else.

    .venv/bin/python bench/extraction.py [--quick] [--json] [--data DIR]

The pages are Zyte's article extraction benchmark (github.com/scrapinghub/
article-extraction-benchmark, vendored in bench/articles/, see its README.md): 181 news and
blog pages fetched with JavaScript off, each with its URL and the article body a person
marked in it. The configurations take turns page by page, so a drift in the machine's load
touches them alike. `--quick` reads every fourth page in id order.

The metric is the benchmark's own (its evaluate.py), written again here:

- tokens: the runs of word characters (`\\w+`, Unicode), case kept, everything else dropped;
- shingles: the runs of 4 consecutive tokens, counted as a multiset (a text of 4 tokens or
  fewer is one shingle of them all; a text of none has none);
- per page, extracted against marked: tp = shingles in both (the smaller of the two counts),
  fp = shingles extracted beyond the marked count, fn = marked shingles not extracted;
  precision tp / (tp + fp), recall tp / (tp + fn); both 1 when fp = fn = 0 (nothing
  extracted where nothing is marked counts as right), precision 0 when tp = fp = 0 and
  recall 0 when tp = fn = 0. (evaluate.py also divides the three by their sum so that long
  pages weigh no more: no ratio changes.)
- over the pages: precision is the mean of the page precisions where something was
  extracted (tp + fp > 0: a page left empty costs recall, not precision), recall the mean
  of the page recalls where something is marked, and F1 the harmonic mean of those two
  means, as in the benchmark's published table.

Checked against evaluate.py on the benchmark's stored outputs (commit 4a3bc97): the same page
scores, and its published figures (trafilatura 2.0.0: F1 0.958, precision 0.938, recall 0.978;
readability-lxml 0.8.4.1: 0.922, 0.913, 0.931).

Also shown: ± is the standard deviation of F1 over 1000 bootstrap resamples of the pages;
Δ F1 the difference from the tool's F1 on the same resamples (paired); "page F1" a page's
own harmonic mean of precision and recall, its median, how many pages are below 0.5, and
how many pages a configuration reads better or worse than the tool (page F1 more than 0.01
above or below); "empty": pages it extracted no word from; time: the median per page of
the whole call (the previous extractor and web.extract parse the page themselves).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "articles"
SOURCE = "scrapinghub/article-extraction-benchmark"
SHINGLE_TOKENS = 4
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 17
QUICK_EVERY = 4
# A page reads better or worse than with the tool past this difference in its F1.
PAGE_F1_MARGIN = 0.01
# A str pattern matches Unicode word characters; evaluate.py's IGNORECASE, MULTILINE and
# DOTALL flags change nothing for \w+, and findall keeps the case.
_WORD = re.compile(r"\w+")

Extractor = Callable[[str, str], str]


# ---------------------------------------------------------------- the metric


def tokens(text: str) -> list[str]:
    return _WORD.findall(text)


def shingles(text: str, size: int = SHINGLE_TOKENS) -> Counter[tuple[str, ...]]:
    """The text's runs of `size` consecutive tokens, with their counts."""
    words = tokens(text)
    if len(words) <= size:
        return Counter([tuple(words)] if words else [])
    return Counter(tuple(words[i : i + size]) for i in range(len(words) - size + 1))


@dataclass(frozen=True)
class Match:
    """Shingles an extraction shares with the marked body (tp), adds (fp) and misses (fn)."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        if self.fp == self.fn == 0:
            return 1.0
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        if self.fp == self.fn == 0:
            return 1.0
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match(marked: str, extracted: str) -> Match:
    want, got = shingles(marked), shingles(extracted)
    return Match(
        tp=sum((want & got).values()),
        fp=sum((got - want).values()),
        fn=sum((want - got).values()),
    )


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float


def score(matches: Sequence[Match]) -> Scores:
    """The benchmark's figures over pages: mean precision where something was extracted,
    mean recall where something is marked, F1 their harmonic mean (0 for no pages)."""
    precisions = [m.precision for m in matches if m.tp + m.fp]
    recalls = [m.recall for m in matches if m.tp + m.fn]
    p = statistics.fmean(precisions) if precisions else 0.0
    r = statistics.fmean(recalls) if recalls else 0.0
    return Scores(p, r, 2 * p * r / (p + r) if p + r else 0.0)


# ---------------------------------------------------------------- the extractors


def previous(html: str, url: str) -> str:
    """The hand-written extractor trafilatura replaced (it strips tags from the tree it gets)."""
    from selectolax.lexbor import LexborHTMLParser

    from buddy.tools.web import basic_text

    return basic_text(LexborHTMLParser(html))


def tool_markdown(html: str, url: str) -> str:
    """What web_extract keeps of a page (Markdown, or the basic text it falls back to), as
    plain text."""
    from buddy.tools.extract import plain
    from buddy.tools.web import FetchedPage, extract

    return plain(extract(FetchedPage(url, 200, "text/html", html)).text)


def trafilatura_with(
    min_extracted_size: int | None = None,
    *,
    favor_precision: bool = False,
    favor_recall: bool = False,
) -> Extractor:
    """trafilatura called as extract_html calls it, once, with a focus and MIN_EXTRACTED_SIZE
    when one is given; its Markdown scored as web_extract's is."""
    settings: Any = None

    def run(html: str, url: str) -> str:
        from buddy.tools import extract

        nonlocal settings
        if settings is None:
            settings = extract.config(min_extracted_size)
        try:
            found = extract.document(
                html, url, settings, favor_precision=favor_precision, favor_recall=favor_recall
            )
        except RecursionError:
            return ""
        return extract.plain((found.text or "").strip()) if found is not None else ""

    return run


def reference(html: str, url: str) -> str:
    """trafilatura as it comes: extract(html), every setting its default."""
    import trafilatura

    return str(trafilatura.extract(html) or "")


TOOL = "tool: web.extract, plain()"
CONFIGURATIONS: dict[str, Extractor] = {
    "previous: basic_text": previous,
    TOOL: tool_markdown,
    "one pass, tool's settings": trafilatura_with(),
    "one pass, favor_precision": trafilatura_with(favor_precision=True),
    "one pass, favor_recall": trafilatura_with(favor_recall=True),
    "one pass, MIN_EXTRACTED_SIZE=1": trafilatura_with(min_extracted_size=1),
    "reference: trafilatura.extract(html)": reference,
}


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class Article:
    page_id: str
    url: str
    html: str
    body: str


def load(data: Path = DATA, every: int = 1) -> list[Article]:
    """The pages in id order (an id is the SHA-256 of the URL), every `every`th one, decoded
    as web_extract decodes a page sent with no charset."""
    from buddy.tools.web import decode_text

    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    return [
        Article(
            page_id,
            truth[page_id].get("url", ""),
            decode_text(gzip.decompress((data / "html" / f"{page_id}.html.gz").read_bytes()), None),
            truth[page_id]["articleBody"],
        )
        for page_id in sorted(truth)[::every]
    ]


@dataclass(frozen=True)
class Figures:
    configuration: str
    f1: float
    f1_sd: float
    delta_f1: float
    delta_f1_sd: float
    precision: float
    recall: float
    page_f1_p50: float
    pages_f1_below_half: int
    pages_better: int
    pages_worse: int
    empty_pages: int
    ms_p50: float


def bootstrap(
    runs: dict[str, list[Match]], baseline: str, resamples: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Per configuration: the standard deviation of F1, and of its difference from the
    baseline's F1, over the same resamples of the pages."""
    rng = random.Random(seed)
    pages = len(runs[baseline])
    f1s: dict[str, list[float]] = {name: [] for name in runs}
    deltas: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(resamples):
        picked = [rng.randrange(pages) for _ in range(pages)]
        base = score([runs[baseline][i] for i in picked]).f1
        for name, matches in runs.items():
            f1 = score([matches[i] for i in picked]).f1
            f1s[name].append(f1)
            deltas[name].append(f1 - base)
    return {name: (statistics.stdev(f1s[name]), statistics.stdev(deltas[name])) for name in runs}


def measure(quick: bool = False, data: Path = DATA) -> dict[str, Any]:
    """Every configuration's figures on the vendored pages (every fourth one when quick)."""
    articles = load(data, QUICK_EVERY if quick else 1)
    # One untimed call each first: the first pays for imports and trafilatura's caches.
    for extractor in CONFIGURATIONS.values():
        extractor(articles[0].html, articles[0].url)
    runs: dict[str, list[Match]] = {name: [] for name in CONFIGURATIONS}
    times: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    empty: Counter[str] = Counter()
    for article in articles:
        for name, extractor in CONFIGURATIONS.items():
            began = time.perf_counter()
            text = extractor(article.html, article.url)
            times[name].append((time.perf_counter() - began) * 1000)
            runs[name].append(match(article.body, text))
            empty[name] += not tokens(text)
    spread = bootstrap(runs, TOOL, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    tool_f1 = score(runs[TOOL]).f1
    tool_pages = [m.f1 for m in runs[TOOL]]
    figures = []
    for name, matches in runs.items():
        scores = score(matches)
        pages = [m.f1 for m in matches]
        gains = [f - t for f, t in zip(pages, tool_pages, strict=True)]
        figures.append(
            Figures(
                configuration=name,
                f1=round(scores.f1, 3),
                f1_sd=round(spread[name][0], 3),
                delta_f1=round(scores.f1 - tool_f1, 3),
                delta_f1_sd=round(spread[name][1], 3),
                precision=round(scores.precision, 3),
                recall=round(scores.recall, 3),
                page_f1_p50=round(statistics.median(pages), 3),
                pages_f1_below_half=sum(f < 0.5 for f in pages),
                pages_better=sum(gain > PAGE_F1_MARGIN for gain in gains),
                pages_worse=sum(gain < -PAGE_F1_MARGIN for gain in gains),
                empty_pages=empty[name],
                ms_p50=round(statistics.median(times[name]), 1),
            )
        )
    return {
        "source": SOURCE,
        "pages": len(articles),
        "baseline": TOOL,
        "configurations": [asdict(f) for f in figures],
    }


def table(results: dict[str, Any]) -> str:
    """The figures as a Markdown pipe table, then a line saying what they are."""
    header = [
        "configuration",
        "F1",
        "Δ F1 vs tool",
        "precision",
        "recall",
        "page F1 p50",
        "F1 < 0.5",
        "better/worse",
        "empty",
        "ms p50",
    ]
    rows = []
    for f in results["configurations"]:
        is_tool = f["configuration"] == results["baseline"]
        rows.append(
            [
                f["configuration"],
                f"{f['f1']:.3f} ± {f['f1_sd']:.3f}",
                "" if is_tool else f"{f['delta_f1']:+.3f} ± {f['delta_f1_sd']:.3f}",
                f"{f['precision']:.3f}",
                f"{f['recall']:.3f}",
                f"{f['page_f1_p50']:.3f}",
                str(f["pages_f1_below_half"]),
                "" if is_tool else f"{f['pages_better']}/{f['pages_worse']}",
                str(f["empty_pages"]),
                f"{f['ms_p50']:.1f}",
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|:" + "-" * (widths[0] + 1) + "|" + "|".join("-" * (w + 1) + ":" for w in widths[1:])
    return "\n".join(
        [
            line(header),
            rule + "|",
            *(line(row) for row in rows),
            "",
            f"{results['pages']} pages of {results['source']}, its token-shingle metric; "
            "± and Δ: bootstrap standard deviations; better/worse: pages whose F1 differs from "
            f"the tool's by more than {PAGE_F1_MARGIN} (bench/extraction.py says more).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/extraction.py", description=(__doc__ or "").split("\n", 1)[0]
    )
    parser.add_argument("--quick", action="store_true", help=f"every {QUICK_EVERY}th page")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    parser.add_argument(
        "--data",
        type=Path,
        default=DATA,
        help="a directory with ground-truth.json and html/ (a checkout of the benchmark works)",
    )
    args = parser.parse_args(argv)
    results = measure(args.quick, args.data)
    print(json.dumps(results, indent=1) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
