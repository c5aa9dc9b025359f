"""When did each induction head form? The steepest rise of its score across a run's checkpoints, aligned with the
steepest fall of the in-context-learning score (Olsson et al. 2022: the phase change shows in both at once).

The rise is measured between consecutive checkpoints, so checkpoints should be evenly spaced on the axis that
matters (log-spaced for the zoo, every N steps for a training run); the reported step is the checkpoint that ends
the steepest interval, i.e. the first checkpoint at which the jump is visible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Collection, Sequence

from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class HeadFormation:
    """One induction head: its steepest-rise interval and how its score moved."""

    layer: int
    head: int
    step: int  # checkpoint ending the steepest rise
    previous_step: int  # checkpoint starting it
    rise: float  # score gained over that interval
    first_score: float
    max_score: float
    final_score: float
    aligned_with_icl: bool  # within one checkpoint of the steepest ICL-score fall


@dataclass(frozen=True)
class FormationReport:
    """All induction heads of a run and the in-context-learning phase change."""

    heads: list[HeadFormation]
    icl_drop_step: int | None  # checkpoint ending the steepest fall of the ICL score
    icl_drop_previous_step: int | None
    icl_drop: float | None
    threshold: float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "heads": [asdict(h) for h in self.heads]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FormationReport:
        """The report `to_json` wrote (keys it does not know, such as a note, ignored)."""
        return cls([HeadFormation(**h) for h in data["heads"]], data["icl_drop_step"],
                   data["icl_drop_previous_step"], data["icl_drop"], data["threshold"])


def steepest_change(values: Float[Tensor, " checkpoint"], sign: int = 1) -> int:
    """Index i >= 1 maximising sign * (values[i] - values[i-1])."""
    return int((sign * values.diff()).argmax()) + 1


def detect_formation(steps: Sequence[int], induction: Float[Tensor, "checkpoint layer head"],
                     icl: Float[Tensor, " checkpoint"] | None = None, threshold: float = 0.4,
                     exclude: Collection[tuple[int, int]] = ()) -> FormationReport:
    """Induction heads are those whose score reaches `threshold` at some checkpoint (heads in `exclude`, e.g.
    clamped ones, are skipped); sorted by their maximum score."""
    if len(steps) < 2:
        return FormationReport([], None, None, None, threshold)
    icl_idx = steepest_change(icl, sign=-1) if icl is not None else None
    heads = []
    for layer, head in (induction.amax(0) >= threshold).nonzero().tolist():
        if (layer, head) in exclude:
            continue
        curve = induction[:, layer, head]
        i = steepest_change(curve)
        heads.append(HeadFormation(
            layer=layer, head=head, step=int(steps[i]), previous_step=int(steps[i - 1]),
            rise=float(curve[i] - curve[i - 1]), first_score=float(curve[0]), max_score=float(curve.max()),
            final_score=float(curve[-1]), aligned_with_icl=icl_idx is not None and abs(i - icl_idx) <= 1))
    heads.sort(key=lambda h: -h.max_score)
    if icl_idx is None:
        return FormationReport(heads, None, None, None, threshold)
    return FormationReport(heads, int(steps[icl_idx]), int(steps[icl_idx - 1]),
                           float(icl[icl_idx] - icl[icl_idx - 1]), threshold)
