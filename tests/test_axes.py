"""Adding an axis is one declaration: an ``Axis`` registered beside the others gets its CLI flag,
its TOML key, a spec and a point field, a record column, its place in point ids and a compare
match key, with no other file touched; at its default, every 0.4.2 point id stays what it was."""

import pytest

from harness.analysis.keys import group_keys, match_keys
from harness.commands.flags import Parser, sweep_flags
from harness.config import values as v
from harness.config.axes import AXES, Axis, with_axis
from harness.config.points import expand, point_class, recorded
from harness.config.policies import DataInfo
from harness.config.spec import build_spec, load_toml, spec_class
from harness.errors import SpecError
from harness.store.schema import POINTS, points_columns

MICRO = Axis("micro_batches", v.integers("micro_batches", 1), (1,), "workload", "comma list of micro-batches a step accumulates",
             sweep=True, point="micro_batch", group_key=True, title="micro", phrase="{} micro-batches", since="0.5")
AXES_WITH = with_axis(MICRO)
FLAGS = {"batch_sizes": "8,16", "dataset_sizes": "100", "steps": "10", "devices": "cpu"}


def _points(**flags):
    spec = build_spec(cli_values={**FLAGS, **flags}, axes=AXES_WITH, cls=spec_class(AXES_WITH))
    return expand(spec, DataInfo(100, None), ["cpu"], axes=AXES_WITH, cls=point_class(AXES_WITH))


def test_a_new_axis_has_a_flag_a_toml_key_and_a_spec_field(tmp_path):
    parser = Parser(prog="batchbench run")
    sweep_flags(parser, AXES_WITH)
    args = parser.parse_args(["--micro-batches", "1,4"])
    assert args.micro_batches == "1,4" and "--micro-batches" in parser.format_help()
    path = tmp_path / "spec.toml"
    path.write_text("micro-batches = [2, 4]\n")
    assert build_spec(load_toml(path, AXES_WITH), axes=AXES_WITH, cls=spec_class(AXES_WITH)).micro_batches == (2, 4)
    with pytest.raises(SpecError, match="unknown key 'micro-batches'"):
        load_toml(path)  # without the declaration it is no key at all
    with pytest.raises(SpecError, match="--micro-batches"):
        _points(micro_batches="0")


def test_a_sweep_axis_multiplies_the_points_and_is_recorded_matched_and_grouped():
    points = _points(micro_batches="1,4")
    assert [(p.batch_size, p.micro_batch) for p in points] == [(8, 1), (8, 4), (16, 1), (16, 4)]
    assert "micro_batch" in points_columns(AXES_WITH) and "micro_batch" not in POINTS
    assert recorded(points[1])["micro_batch"] == 4
    assert "micro_batch" in match_keys(AXES_WITH) and "micro_batch" in group_keys(AXES_WITH)


def test_at_its_default_a_new_axis_leaves_every_point_id_as_it_was():
    spec = build_spec(cli_values=FLAGS)
    before = [p.point_id for p in expand(spec, DataInfo(100, None), ["cpu"])]
    assert [p.point_id for p in _points()] == before
    assert [p.point_id for p in _points(micro_batches="4")] != before  # where it changes the work, it changes the id


def test_every_axis_is_declared_once():
    names = [a.name for a in AXES]
    assert len(names) == len(set(names))
    fields = [a.point_field for a in AXES if a.point_field]
    assert len(fields) == len(set(fields))


def test_a_throwaway_model_axis_builds_the_same_model_everywhere_a_model_is_built():
    """A new model knob takes its declaration (``to_model``, the commands that take it) and the
    model code that uses it, nothing else: the pre-flight, tune's first probe, the engine and
    overhead's plain loop all build the model from the point's value, at the same weights; it
    is a flag of the commands it names, a group key and part of the point's id."""
    from torch import nn

    from harness.config.axes import ALL, taken_by
    from harness.drivers.overhead import plain_loop
    from harness.drivers.plan import plan
    from harness.drivers.tune.trials import initial_noise_scale
    from harness.run.engine import run_point

    built = []

    def dropout_net(n_features, n_outputs, dropout):  # the model code that uses the knob
        model = nn.Sequential(nn.Linear(n_features, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, n_outputs))
        built.append((dropout, float(model[0].weight.detach().sum())))
        return model

    dropout = Axis("dropout", lambda value: v.parse_float("dropout", value, 0.0, 1.0, low_open=False), 0.0, "workload", "dropout probability",
                   to_model=True, commands=ALL, since="0.7")  # the declaration
    axes = with_axis(dropout)
    flags = {"dataset": "blobs", "dataset_sizes": "200", "model": "python:dropout_net", "devices": "cpu", "batch_sizes": "8", "steps": "6"}
    spec = build_spec(cli_values={**flags, "dropout": "0.25"}, axes=axes)
    the_plan = plan(spec, factory=dropout_net)  # its pre-flight builds the model once
    (point,) = the_plan.points
    initial_noise_scale(point, the_plan)  # tune's probe at the weights every trial starts from
    assert run_point(point, the_plan.workload(point)).status == "ok"  # the engine
    plain_loop(point, the_plan.workload(point))  # overhead's plain loop
    assert len(built) == 4 and len(set(built)) == 1 and built[0][0] == 0.25, built
    assert all(dropout.name in taken_by(command, axes) for command in ("run", "tune", "cbs", "fit"))
    assert "dropout" in group_keys(axes)
    other = plan(build_spec(cli_values={**flags, "dropout": "0.5"}, axes=axes), factory=dropout_net).points[0]
    assert other.point_id != point.point_id
