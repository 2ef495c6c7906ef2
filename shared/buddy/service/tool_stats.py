"""Use case of GET /stats/tools: each tool's figures for the caller's missions and for
everyone's (aggregates only), and what its ratings add to its confidence now."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from buddy.domain import stats
from buddy.domain.progress import Clock
from buddy.domain.stats import Counters
from buddy.service.ports import ToolStatsStore

if TYPE_CHECKING:
    from buddy.tools import ToolRegistry


@dataclass
class ToolStatsService:
    store: ToolStatsStore
    tools: ToolRegistry
    clock: Clock

    def view(self, owner_uid: str) -> dict[str, Any]:
        mine, everyone = self.store.counters(owner_uid), self.store.counters(None)
        today = self.clock().date()
        shown = []
        for tool in self.tools.names():
            adjustments = []
            for (name, intent), counters in sorted(everyone.items()):
                ratings, total = _ratings(counters)
                if name == tool and ratings:
                    adjustments.append(
                        {
                            "intent": intent,
                            "adjustment": round(stats.adjustment(ratings, total), 4),
                            "ratings": ratings,
                            "mean_rating": round(total / ratings, 3),
                        }
                    )
            shown.append(
                {
                    "tool": tool,
                    "mine": asdict(stats.summary(_of_tool(mine, tool), today)),
                    "everyone": asdict(stats.summary(_of_tool(everyone, tool), today)),
                    "adjustments": adjustments,
                }
            )
        return {"tools": shown}


def _of_tool(counters: Mapping[tuple[str, str], Counters], tool: str) -> Counters:
    """A tool's counters over all the intents it ran for."""
    return stats.merged(c for (name, _), c in counters.items() if name == tool)


def _ratings(counters: Counters) -> tuple[int, float]:
    return round(counters.get("ratings", 0)), counters.get("rating_sum", 0.0)
