import numpy as np
import pytest

from harness.run.clock import PhaseClock, split_steps


def fake_clock(times_ns):
    it = iter(times_ns)
    return lambda: next(it)


def test_marks_become_non_overlapping_phases_per_window():
    # two timed steps, window closed, then one timed step, window closed
    ticks = [0, 10, 110, 130, 135, 140, 150, 250, 270, 290, 300,  # step 1, step 2, close
             1000, 1005, 1105, 1120, 1190, 1200,                 # step 3, close
             1300]                                               # close (an empty window)
    clock = PhaseClock("cpu", now_ns=fake_clock(ticks))
    for _ in range(2):
        for _ in range(5):
            clock.mark()
    clock.close_window()
    for _ in range(5):
        clock.mark()
    clock.close_window()
    first, second = (split_steps(w) for w in clock.windows())
    assert np.allclose(first["data"], [10e-9, 10e-9])
    assert np.allclose(first["derivative"], [100e-9, 100e-9])
    assert np.allclose(first["update"], [20e-9, 20e-9])
    assert np.allclose(first["step_wall"], [135e-9, 150e-9])  # a step's start to its end mark
    assert np.allclose(second["derivative"], [100e-9]) and np.allclose(second["step_wall"], [190e-9])
    assert np.allclose(clock.closed_steps_s(), [135e-9, 150e-9, 190e-9])  # every closed window's steps
    clock.close_window()  # an empty window (a check right after another) leaves them all
    assert np.allclose(clock.closed_steps_s(), [135e-9, 150e-9, 190e-9])


def test_marks_after_the_last_window_are_dropped_and_bad_mode_is_loud():
    clock = PhaseClock("cpu", now_ns=fake_clock(range(100)))
    clock.mark()
    assert clock.windows() == []
    with pytest.raises(ValueError, match="timing mode"):
        PhaseClock("wallclock")
