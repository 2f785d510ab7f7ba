"""The TensorRT pre-flight check: operator tables as package data, opset, restrictions, the `check` command."""

import itertools
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from pacb_edge.cli import app
from pacb_edge.errors import PacbEdgeError
from pacb_edge.export.trt_check import PROFILES, check_model, get_profile, preflight

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


def _model(nodes, inputs, outputs, opset, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _hardswish(opset: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    return _model([helper.make_node("HardSwish", ["x"], ["y"], name="act/HardSwish")], [x], [y], opset)


def _hardsigmoid_mul():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["g"], name="act/HardSigmoid", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["x", "g"], ["y"], name="act/Mul"),
    ]
    return _model(nodes, [x], [y], 13)


def _conv1d():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 16])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3], [0.1, 0.2, 0.3])
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="eca/Conv", pads=[1, 1])
    return _model([node], [x], [y], 13, [w])


def test_tables_are_package_data_and_82_is_the_published_list():
    published = [ln.strip() for ln in (FIXTURES / "tensorrt-8.2-onnx-operators.txt").read_text().splitlines()]
    published = {ln for ln in published if ln and not ln.startswith("#")}
    assert set(PROFILES["8.2"].operators()) == published
    assert "HardSwish" not in PROFILES["8.2"].operators() and "HardSigmoid" in PROFILES["8.2"].operators()
    for profile in PROFILES.values():
        ops = profile.operators()
        assert len(ops) > 100 and {"Conv", "Relu", "Add", "GlobalAveragePool"} <= set(ops)
    assert PROFILES["8.2"].max_opset == 13 and PROFILES["8.5"].max_opset == 17
    assert [p.version for p in PROFILES.values()] == ["8.2", "8.4", "8.5", "8.6", "10"]


def test_versions_by_prefix_and_unknown():
    assert get_profile("8.2.1.8").version == "8.2"
    assert get_profile("10.3").version == "10"
    assert get_profile(None).version == "8.2"
    with pytest.raises(PacbEdgeError, match="unknown TensorRT version '7.1'.*8.2 \\(JetPack 4.6\\)"):
        get_profile("7.1")


def test_opset17_hardswish_is_refused_by_82_with_the_first_version_that_takes_it():
    problems = check_model(_hardswish(17), "8.2")
    by_op = {p.op: p for p in problems}
    assert set(by_op) == {"opset", "HardSwish"}
    assert by_op["opset"].first_version == "8.4" and "opset 17 is above 13" in by_op["opset"].reason
    hs = by_op["HardSwish"]
    assert hs.node == "act/HardSwish" and hs.first_version == "8.6"
    assert "HardSwish (node act/HardSwish)" in hs.line() and "TensorRT 8.6" in hs.line()
    assert check_model(_hardswish(17), "8.6") == []


def test_hardsigmoid_times_x_at_opset13_passes():
    assert check_model(_hardsigmoid_mul(), "8.2") == []


def test_conv1d_is_refused_by_82_and_84_but_not_85():
    (problem,) = check_model(_conv1d(), "8.2")
    assert problem.op == "Conv" and "1-D" in problem.reason and problem.first_version == "8.5"
    assert check_model(_conv1d(), "8.4") and not check_model(_conv1d(), "8.5")


def test_instance_norm_scale_must_be_an_initializer_until_86():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    b = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.0, 0.0])
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="norm")
    model = _model([node], [x, s], [y], 13, [b])
    (problem,) = check_model(model, "8.2")
    assert "`scale`" in problem.reason and problem.first_version == "8.6"


def test_check_command_ok_and_problems(tmp_path):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_hardsigmoid_mul(), good)
    onnx.save(_hardswish(17), bad)
    r = runner.invoke(app, ["check", str(good), "--trt", "8.2"])
    assert r.exit_code == 0 and r.output.startswith("ok")
    r = runner.invoke(app, ["check", str(bad), "--trt", "8.2", "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2 and any("HardSwish (node act/HardSwish)" in ln and "8.6" in ln for ln in lines)
    assert '"ok": false' in (tmp_path / "c.json").read_text()
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    r = runner.invoke(app, ["check", str(tmp_path / "junk.onnx")])
    assert r.exit_code == 1 and "not a readable ONNX file" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["check", str(good), "--trt", "6"])
    assert r.exit_code == 1 and "unknown TensorRT version" in r.output


def test_preflight_raises_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    onnx.save(_hardswish(17), bad)
    with pytest.raises(PacbEdgeError, match="TensorRT 8.2 \\(JetPack 4.6\\) cannot parse bad.onnx: opset"):
        preflight(bad, "8.2")
    assert preflight(bad, "8.6").version == "8.6"


@pytest.mark.slow
def test_every_zoo_model_passes_the_82_preflight_at_32px(tmp_path):
    """What the Nano's parser will see: every architecture x attention module at 32x32, exported at opset 13."""
    from pacb_edge.export.onnx import deployable, export_onnx
    from pacb_edge.models import ModelSpec, create_model, list_attentions, list_models

    failures = []
    for arch, attention in itertools.product(list_models(), [None, *list_attentions()]):
        model = create_model(arch, num_classes=10, in_chans=3, attention=attention, width_mult=0.25)
        spec = ModelSpec(arch=arch, attention=attention, width_mult=0.25)
        path = export_onnx(deployable(model), spec, tmp_path / f"{arch}_{attention}.onnx", opset=13)
        problems = check_model(path, "8.2")
        if problems:
            failures.append(f"{arch}/{attention}: {problems[0].line()}")
        # At opset 17 the same graphs carry HardSwish wherever h-swish is used (CA, MobileNetV3): the check sees it.
        if attention == "ca" and arch == "mobilenetv3_large":
            late = export_onnx(deployable(model), spec, tmp_path / "late.onnx", opset=17)
            assert {p.op for p in check_model(late, "8.2")} >= {"opset", "HardSwish"}
        path.unlink()
    assert not failures, failures
