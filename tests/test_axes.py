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
