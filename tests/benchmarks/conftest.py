"""A benchmark is a measurement: it reports its number, its target and its verdict (printed, and
in pytest-benchmark's ``extra_info``), and fails only where enforcement is asked for
(``BATCHBENCH_ENFORCE_TARGETS=1``), so ``pytest --benchmark-only`` on a busy machine shows
numbers instead of red."""

import os

import pytest

ENFORCE = os.environ.get("BATCHBENCH_ENFORCE_TARGETS", "") not in ("", "0")


@pytest.fixture
def verdict(benchmark):
    """``verdict(name, value, target, higher_is_better=True)``: record and print the number with
    its target and whether it met it; assert it only under ``BATCHBENCH_ENFORCE_TARGETS=1``."""

    def judge(name: str, value: float, target: float, higher_is_better: bool = True) -> bool:
        met = value >= target if higher_is_better else value <= target
        benchmark.extra_info.update({name: value, f"{name}_target": target, f"{name}_verdict": "met" if met else "missed"})
        if not benchmark.disabled:
            relation = ">=" if higher_is_better else "<="
            print(f"\n{benchmark.name}: {name} {value:.4g}, target {relation} {target:g}: {'met' if met else 'MISSED'}"
                  + ("" if met or ENFORCE else " (reported, not enforced; BATCHBENCH_ENFORCE_TARGETS=1 enforces it)"))
            if ENFORCE:
                assert met, f"{name} {value:.4g} misses its target {relation} {target:g}"
        return met

    return judge
