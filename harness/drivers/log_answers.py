"""What a sweep's logs (``--log tensorboard|mlflow``) learn at its end: each point as the sweep
settled it (a relative target's ``target_loss`` and to-target columns, crossings refined by
``drivers.crossings``) and the answer per configuration, from the analysis (the store's logs do
not import it: this driver hands the values in)."""

from __future__ import annotations

from typing import Sequence

from harness.analysis.convergence import analyze
from harness.analysis.keys import short_labels
from harness.analysis.recommend import no_answer, recommend
from harness.store.logs import Answer
from harness.store.sqlite import Store


def settle_logs(writers: Sequence, store: Store, run_id: str) -> None:
    """Hand each log the run's points as stored now and its answers, then close it."""
    if not writers:
        return
    points, checks = store.load("points", [run_id]), store.load("checks", [run_id])
    found = answers(points, checks)
    rows = points.to_dict("records")
    for log in writers:
        log.settle(rows, found)
        log.close()


def answers(points, checks) -> list[Answer]:
    """Per configuration, the recommended batch size and the sentence that gives it (or why there
    is none); none at all where no point had a target."""
    targets = [c for c in ("target_loss", "target_accuracy") if c in points]
    if len(points) == 0 or not targets or not points[targets].notna().any().any():
        return []
    groups = analyze(points, checks)
    out = []
    for group, name in zip(groups, short_labels(groups)):
        advice = recommend(group)
        if advice is None:
            out.append(Answer(name, None, text=no_answer(group)))
        else:
            out.append(Answer(name, int(advice.batch_size), tuple(int(b) for b in advice.tied), float(advice.time_to_target_s),
                              float(advice.steps_to_target), advice.sentence()))
    return out
