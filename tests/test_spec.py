import pytest

from harness.errors import SpecError
from harness.config.points import expand
from harness.config.policies import DataInfo, log_check_steps, resolve_batch_sizes
from harness.config.spec import build_spec, load_toml
from harness.config.values import parse_batch_sizes, parse_check_every, text_of

CPU = ["cpu"]


def test_batch_size_ranges_are_powers_of_two_and_full_is_the_training_set():
    assert resolve_batch_sizes(parse_batch_sizes("1..full"), 800, 1000) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 800]
    assert resolve_batch_sizes(parse_batch_sizes("1..16,full,3"), 800, 1000) == [1, 2, 3, 4, 8, 16, 800]
    assert resolve_batch_sizes(parse_batch_sizes("3..16"), 800, 1000) == [4, 8, 16]


@pytest.mark.parametrize("tokens", [["1024"], ["1..1024"]])
def test_batch_size_larger_than_training_set_names_its_size(tokens):
    with pytest.raises(SpecError, match=r"--batch-sizes: .*800 samples at dataset size 1000"):
        resolve_batch_sizes(parse_batch_sizes(tokens), 800, 1000)


@pytest.mark.parametrize("value", ["0", "-4", "abc", "4..2", "1.5", ""])
def test_bad_batch_sizes_are_rejected(value):
    with pytest.raises(SpecError, match="--batch-sizes"):
        build_spec(cli_values={"batch_sizes": value})


def test_flags_override_the_file_and_a_budget_flag_replaces_the_files_budget():
    spec = build_spec({"lr": 0.5, "steps": 100, "model": "linear"}, {"lr": "0.01", "epochs": "2"})
    assert spec.lr == 0.01 and spec.epochs == 2.0 and spec.steps is None and spec.model == "linear"
    with pytest.raises(SpecError, match="not both"):
        build_spec({}, {"steps": "5", "epochs": "2"})


def test_toml_keys_accept_dashes_and_reject_unknown_keys(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('batch-sizes = [1, 2, "full"]\ndataset_sizes = [100]\nsteps = 20\n')
    spec = build_spec(load_toml(path))
    assert text_of(spec.batch_sizes) == ("1", "2", "full") and spec.dataset_sizes == (100,) and spec.steps == 20
    path.write_text("batchsize = 3\n")
    with pytest.raises(SpecError, match="unknown key 'batchsize'"):
        load_toml(path)


def test_expand_gives_one_run_per_point_and_repeat_with_stable_ids():
    spec = build_spec(cli_values={"batch_sizes": "1,4,full", "dataset_sizes": "50,100", "repeats": "2", "steps": "10"})
    runs = expand(spec, DataInfo(1000, None), CPU)
    assert len(runs) == 2 * 3 * 2
    assert [r.train_size for r in runs[:6]] == [40] * 6
    assert {r.batch_size for r in runs if r.dataset_size == 100} == {1, 4, 80}
    assert {r.seed for r in runs} == {0, 1} and {r.init_seed for r in runs} == {0}
    again = expand(spec, DataInfo(1000, None), CPU)
    assert [r.point_id for r in runs] == [r.point_id for r in again]
    assert len({r.point_id for r in runs}) == len(runs)


def test_epochs_budget_and_auto_checks_and_burn_in_at_most_half():
    spec = build_spec(cli_values={"batch_sizes": "1,full", "dataset_sizes": "100", "epochs": "2", "check_set": "train", "target": "none"})
    small, full = expand(spec, DataInfo(100, None), CPU)
    assert (small.steps, full.steps) == (200, 2)
    assert small.check_every.text() == "10" and full.check_every.text() == "1"  # no target: 20 checks, evenly
    assert small.burn_in_steps == 5 and full.burn_in_steps == 1


def test_a_sweep_has_a_relative_target_and_geometric_checks_unless_told_otherwise():
    default = build_spec()
    assert default.target.text() == "rel:0.1" and default.target.fraction == 0.1
    (point,) = expand(build_spec(cli_values={"batch_sizes": "8", "dataset_sizes": "100"}), DataInfo(100, None), CPU)
    assert point.check_every.text() == "log:40" and point.target_rel == 0.1
    assert build_spec(cli_values={"target_loss": "0.5"}).target is None  # an absolute target replaces the default
    assert build_spec(cli_values={"target": "none"}).target is None
    with pytest.raises(SpecError, match="--target: give one target, not --target-loss and --target"):
        build_spec(cli_values={"target_loss": "0.5", "target": "rel:0.2"})


@pytest.mark.parametrize("steps,count,expected_len,head,tail", [(10, 40, 10, [1, 2, 3], [9, 10]), (500, 40, 40, [1, 2, 3, 4, 5], [500]), (20000, 40, 40, [1, 2, 3], [20000])])
def test_log_schedule_checks_every_step_first_then_geometrically(steps, count, expected_len, head, tail):
    at = log_check_steps(steps, count)
    assert len(at) == expected_len and at[: len(head)] == head and at[-len(tail):] == tail
    assert at == sorted(set(at))
    if steps > count:  # a constant ratio once the steps are apart: steps-to-target has the same relative resolution everywhere
        ratios = [b / a for a, b in zip(at, at[1:]) if b - a > 1]
        assert max(ratios) / min(ratios) < 1.25
    assert parse_check_every("log").text() == "log:40" and parse_check_every("LOG:12").text() == "log:12"
    with pytest.raises(SpecError, match="--check-every: 'log:1' is not a schedule"):
        parse_check_every("log:1")


def test_unavailable_devices_are_errors():
    spec = build_spec(cli_values={"devices": "cuda:7"})
    with pytest.raises(SpecError, match="--devices: cuda:7 is not available.*available: cpu"):
        expand(spec, DataInfo(100, None), CPU)
    with pytest.raises(SpecError, match="--devices: 'tpu' is not a device"):
        build_spec(cli_values={"devices": "tpu"})
    assert [r.device for r in expand(build_spec(cli_values={"devices": "auto", "batch_sizes": "1"}), DataInfo(100, None), CPU)][:1] == ["cpu"]


def test_every_spec_field_is_a_run_flag():
    from harness.cli import parser
    from harness.config.axes import FIELDS

    args = parser().parse_args(["run"])
    assert all(hasattr(args, name) for name in FIELDS)


def _conforms(value, annotation) -> bool:
    """Whether a value is of a (typing) annotation: unions, ``tuple[X, ...]``, ``tuple[X, Y]``."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, annotation)


def test_the_typed_spec_and_point_are_the_axis_table():
    """``SweepSpec`` and ``PointSpec`` declare each axis's type; their fields are the table's, in
    its order, with its defaults, and every default and parsed value is of the declared type."""
    import dataclasses
    import typing

    from harness.config.axes import AXES
    from harness.config.points import DERIVED, LINEAGE, PointSpec
    from harness.config.spec import SweepSpec

    spec_types = typing.get_type_hints(SweepSpec)
    assert [f.name for f in dataclasses.fields(SweepSpec)] == [a.name for a in AXES]
    for axis, field in zip(AXES, dataclasses.fields(SweepSpec)):
        assert field.default == axis.default, axis.name
        assert _conforms(axis.default, spec_types[axis.name]), (axis.name, axis.default, spec_types[axis.name])
    point_fields = [a.point_field for a in AXES if a.point_field is not None]
    assert [f.name for f in dataclasses.fields(PointSpec)] == [*point_fields, *DERIVED, *LINEAGE]
    point_types = typing.get_type_hints(PointSpec)
    sweeps = [{}, {"optimizer": "adam", "betas": "0.8,0.99", "eps": "1e-6", "grad_clip": "1", "micro_batch_size": "2", "target_loss": "0.5",
                   "epochs": "2", "sample_interval": "0", "world_sizes": "1,2", "check_every": "7", "peak_tflops": "10",
                   "dataset_sizes": "400", "batch_sizes": "1..full", "lr_policy": "tuned", "lr_grid": "0.01,0.1"},
              {"target": "none", "hidden": "8,8", "loader": "dataloader", "workers": "1", "lr_schedule": "cosine", "target_column": "y"}]
    for flags in sweeps:
        spec = build_spec(cli_values={"dataset": "blobs", **flags})
        for name, annotation in spec_types.items():
            if name == "axes":
                continue
            assert _conforms(getattr(spec, name), annotation), (name, getattr(spec, name), annotation)
        for point in expand(spec, DataInfo(1000, None), CPU):
            for name, annotation in point_types.items():
                if name == "axes":
                    continue
                assert _conforms(getattr(point, name), annotation), (name, getattr(point, name), annotation)
