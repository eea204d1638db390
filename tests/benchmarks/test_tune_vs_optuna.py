"""`batchbench tune` against a general tuner, on the same recorded workload.

A full grid of `batchbench run --lr-policy tuned --stop-at-target` (10 batch sizes x 8 learning
rates, tests/data/tune_grid_blobs.json: every trial's loss at every check, and the median step
time of each batch size) is replayed: a trial costs the samples it trains until it reaches the
target, diverges, runs out of steps, or is pruned at a check. Both tuners judge a trial by its
training time to the target, steps x the batch size's step time.

- tune: ``policy.search`` as ``batchbench tune`` runs it, plus the finalists' repeats over two
  more seeds (replayed at the same cost). Its compute is everything it spends; its answer is the
  best of its trials.
- Optuna: TPE over (batch size, learning rate) with a successive-halving pruner on training
  time (each check reports its loss at the training time reached), a failed trial scoring its
  budget's time. Its compute is what it spent until its best trial first was a near answer.

A near answer: a batch size whose grid time is within 15% of the grid's best. The verdict:
tune needs at most half of Optuna's median compute over 10 seeds (reported; enforced with
BATCHBENCH_ENFORCE_TARGETS=1).
"""

import json
import math
import statistics

from pathlib import Path

import pytest

from harness.drivers.tune.policy import FINALIST_RATIO, Budget, Trial, search
from harness.drivers.tune.runner import REPEATS

GRID = json.loads((Path(__file__).resolve().parents[1] / "data" / "tune_grid_blobs.json").read_text())
STEP_S = {int(b): t for b, t in GRID["step_s"].items()}
RECORDS = {(t["batch_size"], t["lr"]): t for t in GRID["trials"]}
BATCHES = sorted({b for b, _ in RECORDS})
RATES = sorted({lr for _, lr in RECORDS})
NEAR = 1.15


def grid_times() -> dict[int, float]:
    """Per batch size, its best learning rate's steps x step time."""
    out = {}
    for (b, _), t in RECORDS.items():
        if t["steps_to_target"] is not None:
            out[b] = min(out.get(b, math.inf), t["steps_to_target"] * STEP_S[b])
    return out


TIMES = grid_times()
BEST = min(TIMES.values())
GRID_SAMPLES = sum(t["steps"] * b for (b, _), t in RECORDS.items())


def near(batch: int) -> bool:
    return batch in TIMES and TIMES[batch] <= NEAR * BEST


def replay(b: int, lr: float, budget: Budget) -> Trial:
    """A trial as the harness would run it, from the record: stopped at the first check past
    its budget, else as it ended."""
    t, step_s = RECORDS[(b, lr)], STEP_S[b]
    for step, _ in t["checks"][1:]:
        if t["steps_to_target"] is not None and step >= t["steps_to_target"]:
            break
        if (budget.steps is not None and step > budget.steps) or (budget.time_s is not None and step * step_s > budget.time_s):
            return Trial(b, lr, "pruned", step, None, 0.5)
    if t["steps_to_target"] is not None:
        return Trial(b, lr, "reached", int(t["steps_to_target"]), step_s, 1.0)
    return Trial(b, lr, "failed" if t["status"] == "diverged" else "missed", t["steps"], None, 0.0)


def run_tune(start_batch: int = 64, start_lr: float = 0.125) -> tuple[int, int]:
    """(the batch size tune answers, the samples it processed, finalists' repeats included)."""
    choice = search(BATCHES, RATES, replay, start_batch=start_batch, start_lr=start_lr)
    repeats = REPEATS * sum(t.samples for t in choice.finalists) if len(choice.finalists) > 1 else 0
    return choice.best.batch_size, choice.samples_processed + repeats


def run_optuna(seed: int, trials: int = 80) -> tuple[int | None, int, int]:
    """(the samples Optuna processed until its best trial was first a near answer, None: never;
    the samples of its first 30 trials, what a user who ran 30 would spend; all it spent)."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spent = [0]

    def objective(trial):
        b = trial.suggest_categorical("batch_size", BATCHES)
        lr = trial.suggest_categorical("lr", RATES)
        record, step_s = RECORDS[(b, lr)], STEP_S[b]
        for step, loss in record["checks"][1:]:
            if record["steps_to_target"] is not None and step >= record["steps_to_target"]:
                break
            trial.report(loss, step=max(1, int(step * step_s * 1e6)))  # resource: microseconds of training
            if trial.should_prune():
                spent[0] += step * b
                raise optuna.TrialPruned()
        if record["steps_to_target"] is None:
            spent[0] += record["steps"] * b
            return GRID["budget_steps"] * step_s
        spent[0] += int(record["steps_to_target"]) * b
        return record["steps_to_target"] * step_s

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.SuccessiveHalvingPruner())
    found, thirty = None, 0
    for n in range(trials):
        study.optimize(objective, n_trials=1)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if found is None and complete and near(study.best_params["batch_size"]):
            found = spent[0]
        if n == 29:
            thirty = spent[0]
        if found is not None and n >= 29:
            break
    return found, thirty, spent[0]


def test_tune_needs_at_most_half_of_optunas_compute(benchmark, verdict):
    picked, tune_samples = benchmark.pedantic(run_tune, rounds=1, iterations=1)  # the replay's own time: the policy's cost, no training
    runs = [run_optuna(seed) for seed in range(10)]
    reached = [found for found, _, _ in runs if found is not None]
    # the median over every seed: one that never found a near answer needed at least all it spent
    to_near = sorted(found if found is not None else total for found, _, total in runs)
    median = statistics.median(to_near)
    thirty = statistics.median(t for _, t, _ in runs)
    benchmark.extra_info.update({"tune_batch_size": picked, "tune_share": tune_samples / GRID_SAMPLES, "optuna_shares": [s / GRID_SAMPLES for s in to_near],
                                 "optuna_never": len(runs) - len(reached), "optuna_30_trials_share": thirty / GRID_SAMPLES,
                                 "finalist_ratio": FINALIST_RATIO})
    print(f"\ngrid: {GRID_SAMPLES:,} samples; best {min(TIMES, key=TIMES.get)} ({BEST * 1e3:.1f} ms); tune picked {picked} with "
          f"{tune_samples:,} samples ({tune_samples / GRID_SAMPLES:.2%}, all it spends, repeats included); Optuna's median to its first near "
          f"answer {median / GRID_SAMPLES:.2%} over 10 seeds ({', '.join(f'{s / GRID_SAMPLES:.1%}' for s in to_near)}; {len(runs) - len(reached)} "
          f"never got there in 80 trials, counted at all they spent), and {thirty / GRID_SAMPLES:.2%} for 30 trials")
    assert near(picked)
    if not benchmark.disabled:
        verdict("tune_over_optuna_median", tune_samples / median, 0.5, higher_is_better=False)
