"""The engine: how ``precision: auto`` resolves, what each precision refuses or warns about, that
fp32 through Fabric is bitwise plain PyTorch, that bf16 steps stay close to fp32, that the
numerically fragile ops stay fp32 under autocast, and that precision guards checkpoint resumes."""

import json

import mlflow
import pytest
import torch

from cartoon.engine import Engine, resolve_channels_last, resolve_precision
from cartoon.errors import UsageError
from cartoon.guided_filter import guided_filter
from cartoon.methods import available_methods, load_run_params, method_params
from cartoon.methods.animeganv2 import gram
from cartoon.training import run_phase
from cartoon.vgg import RandomWeightsWarning, load_vgg
from tests.conftest import write_params
from tests.test_training import Killed, _data, _kill, _outputs, _patch_step

METHODS = list(available_methods())
CPU = torch.device("cpu")


def _cpu_features(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (True, False, "bf16"),  # Sapphire Rapids and later: AMX tiles
    (False, True, "bf16"),  # Cooper Lake, Zen 4 with AVX512-BF16
    (False, False, "fp32"),  # AVX2 only (this project's AMD EPYC): bf16 is emulated, 27x slower
])  # fmt: skip
def test_auto_on_cpu_is_bf16_only_with_fast_bf16_instructions(monkeypatch, amx, avx512_bf16, expected):
    _cpu_features(monkeypatch, amx, avx512_bf16)
    assert resolve_precision("auto", CPU, "train.precision") == expected


@pytest.mark.parametrize(("supported", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_bf16_support(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    _cpu_features(monkeypatch, amx=not supported, avx512_bf16=not supported)  # the CPU's support must not count
    assert resolve_precision("auto", torch.device("cuda"), "train.precision") == expected


@pytest.mark.parametrize(("choice", "precision", "expected"), [
    ("auto", "bf16", True), ("auto", "fp16", True),  # AMX and tensor-core kernels want channels-last
    ("auto", "fp32", False), (True, "fp32", True), (False, "bf16", False),  # an explicit choice stands
])  # fmt: skip
def test_channels_last_auto_follows_mixed_precision(choice, precision, expected):
    assert resolve_channels_last(choice, precision) is expected


def test_fp16_on_cpu_is_a_usage_error_naming_the_key():
    with pytest.raises(UsageError, match=r"train\.precision: fp16 needs CUDA"):
        resolve_precision("fp16", CPU, "train.precision")


def test_bf16_on_a_slow_cpu_runs_but_warns(monkeypatch, capsys):
    _cpu_features(monkeypatch, amx=False, avx512_bf16=False)
    assert resolve_precision("bf16", CPU, "pretrain.precision") == "bf16"
    assert "pretrain.precision: bf16" in capsys.readouterr().err
    _cpu_features(monkeypatch, amx=True, avx512_bf16=False)
    assert resolve_precision("bf16", CPU, "pretrain.precision") == "bf16"
    assert capsys.readouterr().err == ""


# --- steps ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    return load_run_params(write_params(tmp_path_factory.mktemp("params") / "params.yaml"))


@pytest.fixture(scope="module")
def features(params):
    with pytest.warns(RandomWeightsWarning):
        return load_vgg(params.vgg)


def _method(params, features, name, phase):
    torch.manual_seed(0)
    method = available_methods()[name](method_params(params, name), features, CPU)
    method.setup(phase, epochs=2, steps_per_epoch=2)
    return method


def _batches(method, phase, count):
    generator = torch.Generator().manual_seed(1)
    return [{key: torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1 for key in method.sets[phase]} for _ in range(count)]


def _train(method, batches, engine=None):
    """The loop's steps on ``batches`` (with the engine as ``run_phase`` wires it, when given); the last losses."""
    torch.manual_seed(2)  # White-box draws its grayscale weights from the global generator
    if engine is None:
        return [method.step("train", batch) for batch in batches][-1]
    engine.attach(method)
    for batch in batches:
        with engine.autocast():
            losses = method.step("train", engine.batch(batch))
    return losses


def _state(method):
    return {f"{net}.{key}": value for net, module in method.networks.items() for key, value in module.state_dict().items()}


@pytest.mark.parametrize("name", METHODS)
def test_fp32_through_the_engine_is_bitwise_plain_pytorch(name, params, features):
    plain = _method(params, features, name, "train")
    batches = _batches(plain, "train", 2)
    plain_losses = _train(plain, batches)
    engined = _method(params, features, name, "train")
    engined_losses = _train(engined, batches, Engine(CPU, "fp32"))
    assert all(torch.equal(plain_losses[key], engined_losses[key]) for key in plain_losses)
    expected, got = _state(plain), _state(engined)
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    for optimizer in plain.optimizers:  # the Adam moments too
        a, b = plain.optimizers[optimizer].state_dict()["state"], engined.optimizers[optimizer].state_dict()["state"]
        assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)


@pytest.mark.parametrize("name", METHODS)
def test_a_bf16_step_gives_finite_losses_close_to_fp32(name, params, features):
    reference = _method(params, features, name, "train")
    batches = _batches(reference, "train", 1)
    fp32 = _train(reference, batches)
    bf16 = _train(_method(params, features, name, "train"), batches, Engine(CPU, "bf16"))
    assert fp32.keys() == bf16.keys()
    for key in fp32:
        assert bf16[key].dtype == torch.float32 and torch.isfinite(bf16[key]), key
        assert torch.isclose(bf16[key], fp32[key], rtol=0.03, atol=1e-6), (key, bf16[key], fp32[key])


def test_bf16_actually_runs_the_networks_in_bf16(params, features):
    """The tolerance test above would also pass if autocast were never entered; here a conv's output dtype shows it."""
    method = _method(params, features, "cartoongan", "train")
    seen = []
    method.generator.net[0].register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    _train(method, _batches(method, "train", 1), Engine(CPU, "bf16"))
    assert seen == [torch.bfloat16]


def test_channels_last_converts_networks_and_batches_and_trains_alike(params, features):
    contiguous = _method(params, features, "cartoongan", "train")
    batches = _batches(contiguous, "train", 1)
    expected = _train(contiguous, batches)
    method = _method(params, features, "cartoongan", "train")
    engine = Engine(CPU, "fp32", channels_last=True)
    got = _train(method, batches, engine)
    weights = [p for module in method.networks.values() for p in module.parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert all(images.is_contiguous(memory_format=torch.channels_last) for images in engine.batch(batches[0]).values())
    assert all(torch.isclose(got[key], expected[key], rtol=1e-4, atol=1e-6) for key in expected)


# --- ops kept in fp32 ----------------------------------------------------------------------


def _bf16_values(*shape):
    """Random values exactly representable in bf16, as fp32: the fp32 reference sees the same inputs."""
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(3)) * 2 - 1).bfloat16().float()


def test_gram_is_fp32_under_bf16_autocast():
    features = _bf16_values(2, 8, 6, 6)
    expected = gram(features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gram(features.bfloat16())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_guided_filter_is_fp32_under_bf16_autocast():
    guide, src = _bf16_values(2, 3, 12, 12), _bf16_values(2, 3, 12, 12).flip(0)
    expected = guided_filter(guide, src, 2, 1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = guided_filter(guide.bfloat16(), src.bfloat16(), 2, 1e-2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


# --- the loop ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
def test_precision_is_recorded_and_a_checkpoint_at_another_precision_is_not_resumed(project, monkeypatch):
    write_params(project / "params.yaml", pretrain={"precision": "fp32"})
    with monkeypatch.context() as patch:
        _patch_step(patch, 2, _kill)
        with pytest.raises(Killed):
            run_phase("pretrain", load_run_params("params.yaml"), _data(project), _outputs(project, "pretrain"))
    saved = torch.load(project / "ckpt/pretrain.pt", weights_only=True)
    assert saved["global_step"] == 1

    _cpu_features(monkeypatch, amx=True, avx512_bf16=False)  # auto resolves to bf16 now
    write_params(project / "params.yaml", pretrain={"precision": "auto"})
    metrics = run_phase("pretrain", load_run_params("params.yaml"), _data(project), _outputs(project, "pretrain"))
    assert metrics["precision"] == "bf16"
    assert json.loads((project / "reports/pretrain/metrics.json").read_text())["precision"] == "bf16"
    record = json.loads((project / "reports/pretrain/mlflow_run.json").read_text())
    assert record["run_id"] != saved["run_id"]  # a fresh run: the fp32 steps were not continued at bf16
    run = mlflow.get_run(record["run_id"])
    assert run.data.tags["precision"] == "bf16" and run.data.params["pretrain.precision_resolved"] == "bf16"
    assert run.data.params["pretrain.channels_last_resolved"] == "True"  # params.yaml: channels_last auto


def test_compiled_networks_give_the_eager_losses_and_keep_their_keys(params, features):
    eager = _method(params, features, "cartoongan", "train")
    batches = _batches(eager, "train", 1)  # compiling forward and backward takes tens of seconds on 2 cores
    expected = _train(eager, batches)
    compiled = _method(params, features, "cartoongan", "train")
    keys = set(_state(compiled))
    got = _train(compiled, batches, Engine(CPU, "fp32", compile=True))
    assert compiled.generator._compiled_call_impl is not None  # torch.compile really wraps the forward
    assert set(_state(compiled)) == keys  # checkpoints and saved generators keep their layout
    for key in expected:
        assert torch.isclose(got[key], expected[key], rtol=1e-4, atol=1e-6), (key, got[key], expected[key])
