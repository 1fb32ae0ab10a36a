"""The version map: the picture people draw when they explain pinning, laid out for SVG.

Environments sit on top as labels with arrows down to the deployments they name (a split has
one arrow per target, with its weight). Deployments are boxes left to right, oldest first;
under each, the runs in flight on it as a bar, one segment per status. A draining deployment
(no environment names it, runs still pinned) fades as its runs finish: its opacity follows the
share of its runs still in flight. A drained one is faint and says it is safe to remove.

Pure layout: plain data in (the deployments list, the environments, run totals), coordinates
out; ``templates/map.html`` draws them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BOX_WIDTH = 150
BOX_HEIGHT = 64
GAP = 40
LEFT = 30
ENV_Y = 30
BOX_Y = 130
BAR_Y = BOX_Y + BOX_HEIGHT + 16
BAR_HEIGHT = 14
STATUS_ORDER = ("running", "pending", "suspended", "paused", "stuck")
"""In-flight statuses, in the order their segments are drawn."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Part of a deployment's bar: the runs of one status."""

    status: str
    count: int
    x: float
    width: float


@dataclass(slots=True)
class Box:
    """A deployment."""

    label: str
    id: str
    status: str
    x: float
    in_flight: int
    total_runs: int
    opacity: float
    segments: list[Segment] = field(default_factory=list)

    @property
    def center(self) -> float:
        """The x of the box's middle, where arrows land."""
        return self.x + BOX_WIDTH / 2


@dataclass(frozen=True, slots=True)
class Arrow:
    """An environment's pointer to one of its deployments."""

    target: str
    """The deployment's label."""
    x1: float
    y1: float
    x2: float
    y2: float
    weight: int | None
    """The target's weight in a split; None for a plain pointer."""


@dataclass(slots=True)
class EnvMark:
    """An environment: its name and its arrows."""

    name: str
    x: float
    arrows: list[Arrow] = field(default_factory=list)


@dataclass(slots=True)
class VersionMap:
    """Everything the SVG draws, and its size."""

    boxes: list[Box]
    envs: list[EnvMark]
    width: float
    height: float


def _opacity(status: str, in_flight: int, total: int) -> float:
    if status == "active":
        return 1.0
    if status == "drained":
        return 0.3
    # Draining: from nearly solid (every run still in flight) to faint (the last one left).
    share = in_flight / total if total else 1.0
    return round(0.35 + 0.55 * share, 2)


def layout(
    deployments: Sequence[Mapping[str, Any]],
    envs: Sequence[Mapping[str, Any]],
    totals: Mapping[str, int],
) -> VersionMap:
    """Lay the map out.

    Args:
        deployments: the API form of the tenant's deployments, oldest first (removed ones are
            left out of the picture).
        envs: the API form of its environments (``name``, ``targets``).
        totals: every run ever pinned to each deployment, by deployment id (for the fade).
    """
    shown = [d for d in deployments if d.get("status") != "removed"]
    widest = max((int(d.get("in_flight", 0)) for d in shown), default=0)
    boxes: list[Box] = []
    by_id: dict[str, Box] = {}
    for position, dep in enumerate(shown):
        in_flight = int(dep.get("in_flight", 0))
        total = max(int(totals.get(str(dep["id"]), 0)), in_flight)
        box = Box(
            label=str(dep["label"]),
            id=str(dep["id"]),
            status=str(dep["status"]),
            x=LEFT + position * (BOX_WIDTH + GAP),
            in_flight=in_flight,
            total_runs=total,
            opacity=_opacity(str(dep["status"]), in_flight, total),
        )
        if in_flight:
            full = BOX_WIDTH * in_flight / widest
            x = box.x
            runs: Mapping[str, int] = dep.get("runs_by_status") or {}
            for status in (*STATUS_ORDER, *sorted(set(runs) - set(STATUS_ORDER))):
                count = int(runs.get(status, 0))
                if count:
                    width = max(3.0, full * count / in_flight)
                    box.segments.append(Segment(status, count, round(x, 1), round(width, 1)))
                    x += width
        boxes.append(box)
        by_id[box.id] = box
    marks: list[EnvMark] = []
    for env in envs:
        targets = [t for t in env.get("targets", []) if str(t.get("deployment_id")) in by_id]
        if not targets:
            continue
        centers = [by_id[str(t["deployment_id"])].center for t in targets]
        marks.append(EnvMark(name=str(env["name"]), x=sum(centers) / len(centers)))
    # Several environments on one deployment: spread their labels so none hides another.
    marks.sort(key=lambda m: (m.x, m.name))
    for previous, mark in zip(marks, marks[1:], strict=False):
        mark.x = max(mark.x, previous.x + 90)
    for mark, env in ((m, next(e for e in envs if e["name"] == m.name)) for m in marks):
        targets = [t for t in env.get("targets", []) if str(t.get("deployment_id")) in by_id]
        split = len(targets) > 1
        for target in targets:
            box = by_id[str(target["deployment_id"])]
            mark.arrows.append(
                Arrow(
                    target=box.label,
                    x1=mark.x,
                    y1=ENV_Y + 10,
                    x2=box.center,
                    y2=BOX_Y - 6,
                    weight=int(target.get("weight", 100)) if split else None,
                )
            )
    # Several arrows into one box land side by side, in the order of their labels, never on one point.
    landing: dict[str, list[tuple[EnvMark, int]]] = {}
    for mark in marks:
        for position, arrow in enumerate(mark.arrows):
            landing.setdefault(arrow.target, []).append((mark, position))
    for target, incoming in landing.items():
        incoming.sort(key=lambda item: item[0].x)
        for rank, (mark, position) in enumerate(incoming):
            arrow = mark.arrows[position]
            shift = (rank - (len(incoming) - 1) / 2) * 28
            mark.arrows[position] = Arrow(target, arrow.x1, arrow.y1, arrow.x2 + shift, arrow.y2, arrow.weight)
    right = max([b.x + BOX_WIDTH for b in boxes] + [m.x + 60 for m in marks] + [400.0])
    return VersionMap(boxes=boxes, envs=marks, width=right + LEFT, height=BAR_Y + BAR_HEIGHT + 40)
