"""Which lineages a destination holds, where a listing is never the only evidence of absence.

The destination marker (read by GET) names every lineage that ever wrote there. A lineage the
marker names that the listing does not show means the listing is lagging or lying, never that
the destination is empty: callers get `ListingUnreliable` (or, with strict=False, the answer
with `unseen` filled in) and must not act on "nothing there".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memvault.backup.destinations import Destination
from memvault.backup.errors import DestinationError
from memvault.backup.head import LineageHead, read_head, read_marker
from memvault.backup.layout import LINEAGES, lineage_of


class ListingUnreliable(DestinationError):
    """The destination's marker (GET) names lineages its listing does not show."""

    code = "backup_listing_unreliable"


@dataclass
class LineageListing:
    destination: str
    listed: list[str]  # lineages the listing shows
    marked: list[str]  # lineages the marker names (read by GET)
    heads: dict[str, LineageHead] = field(default_factory=dict)  # read by GET

    @property
    def unseen(self) -> list[str]:
        """Lineages a GET proves exist that the listing does not show."""
        return sorted(set(self.marked) - set(self.listed))

    @property
    def lineages(self) -> list[str]:
        return sorted({*self.listed, *self.marked})

    @property
    def reliable(self) -> bool:
        return not self.unseen

    def problem(self) -> str | None:
        if self.reliable:
            return None
        return (f"listing unreliable: the marker of {self.destination} names lineage(s) "
                f"{', '.join(self.unseen)} that its listing does not show; the destination "
                "is not empty, its listing is incomplete")


def list_lineages(dest: Destination, *, strict: bool = True, heads: bool = False
                  ) -> LineageListing:
    """The lineages of `dest`: listed under `lineages/` and named by the marker. Raises
    ListingUnreliable when the marker names one the listing lacks (strict), else returns it
    with `unseen` set. heads=True also reads each lineage's head by GET. Raises
    DestinationError when the destination does not answer."""
    listed = sorted({lin for key in dest.list(LINEAGES + "/") if (lin := lineage_of(key))})
    answer = LineageListing(dest.url, listed, read_marker(dest))
    if heads:
        for lineage_id in answer.lineages:
            head = read_head(dest, lineage_id)
            if head is not None:
                answer.heads[lineage_id] = head
    problem = answer.problem()
    if problem and strict:
        raise ListingUnreliable(problem, hint="retry later; if it persists, check the object "
                                "store (a listing that lags or answers nothing) before acting "
                                "on what it shows")
    return answer
