"""`trainer.precision: auto` and `model.channels_last: auto`: resolved by the CPU's flags and a measurement,
remembered per machine, printed and logged to MLflow; explicit settings pass through untouched."""

import pytest
import torch

from modules import autotune
from training import fit, hardware
from training.config import load_config
from training.tracking import client


@pytest.fixture
def base(idx_root, tmp_path, configs):
    def make(overrides=(), family="se"):
        config = configs.image("hardware-run", idx_root, family, backbone="resnet18_small")
        return load_config(configs.write(tmp_path / "run.yaml", config), list(overrides))
    return make


@pytest.fixture
def timings(monkeypatch):
    """Give the measurement's result: {candidate: seconds} per topic; records which topics were measured."""
    given, measured = {}, []

    def fake(candidates, device, repeats=3):
        topic = next(topic for topic, seconds in given.items() if set(seconds) == set(candidates))
        measured.append(topic)
        return given[topic]

    autotune.forget()
    monkeypatch.setattr(autotune, "time_candidates", fake)
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    given.update(precision={"32-true": 1.0, "bf16-mixed": 0.5},
                 layout={"channels_first": 1.0, "channels_last": 0.5})
    return given, measured


def test_explicit_settings_pass_through_without_measuring(base, timings):
    cfg = base(["trainer.precision=32-true", "model.channels_last=false"])
    assert hardware.precision(cfg) == "32-true" and hardware.channels_last(cfg, 2) is False
    assert timings[1] == []


@pytest.mark.parametrize(("bf16_seconds", "expected"), [(0.5, "bf16-mixed"), (0.9, "32-true")])
def test_auto_picks_bf16_only_when_measured_clearly_faster(base, timings, bf16_seconds, expected):
    timings[0]["precision"]["bf16-mixed"] = bf16_seconds  # 2x faster, or only 1.1x (under the 1.25x margin)
    cfg = base(["trainer.precision=auto"])
    assert hardware.precision(cfg) == expected
    assert hardware.summary(cfg, 2)["resolved.precision"] == expected
    assert "avx512_bf16" in hardware.summary(cfg, 2)["resolved.precision_reason"]
    assert timings[1].count("precision") == 1  # measured once, then remembered


def test_auto_is_fp32_without_bf16_instructions(base, timings, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda: [])
    cfg = base(["trainer.precision=auto"])
    assert hardware.precision(cfg) == "32-true"
    assert "no bf16 instructions" in hardware.summary(cfg, 2)["resolved.precision_reason"]
    assert timings[1] == []


@pytest.mark.parametrize(("last_seconds", "expected"), [(0.5, True), (0.98, False)])
def test_auto_channels_last_where_measured_faster(base, timings, last_seconds, expected):
    timings[0]["layout"]["channels_last"] = last_seconds
    cfg = base(["model.channels_last=auto", "trainer.precision=32-true"])
    assert hardware.channels_last(cfg, 2) is expected


def test_cpu_bf16_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert hardware.cpu_bf16_flags(cpuinfo) == ["amx_bf16", "avx512_bf16"]
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert hardware.cpu_bf16_flags(cpuinfo) == []
    assert hardware.cpu_bf16_flags(tmp_path / "missing") == []


def test_real_measurement_on_this_machine_is_stored_for_other_processes(base):
    autotune.forget()
    cfg = base(["trainer.precision=auto", "model.channels_last=auto"])
    chosen = hardware.precision(cfg)
    assert chosen in ("bf16-mixed", "32-true")
    if not hardware.cpu_bf16_flags():
        assert chosen == "32-true"
    autotune.forget()
    assert hardware.precision(cfg) == chosen  # read back from $ATTNLAB_HOME, not measured again
    assert autotune.cache_path().exists() or not hardware.cpu_bf16_flags()


@pytest.mark.parametrize("family", ["se", "nonlocal"])
def test_fit_with_auto_prints_and_logs_what_it_picked(family, base, video_root, tmp_path, configs, capsys):
    # A real run: whatever this machine resolves to (bf16-mixed and channels-last on a CPU with AVX512-BF16
    # where measured faster) trains end to end, the Non-local blocks through the measured attention kernel.
    autotune.forget()
    if family == "nonlocal":
        config = configs.video("hardware-video", video_root)
        config["model"]["channels_last"] = "auto"
        config["trainer"]["precision"] = "auto"
        config["tracking"].update(log_model=False, figures=False)
        cfg = load_config(configs.write(tmp_path / "video.yaml", config))
    else:
        cfg = base(["trainer.precision=auto", "model.channels_last=auto", "tracking.figures=false"])
    result = fit(cfg)
    printed = capsys.readouterr().out
    params = client(result.tracking_uri).get_run(result.run_id).data.params
    assert params["trainer.precision"] == "auto"
    assert params["resolved.precision"] == hardware.precision(cfg)
    assert params["resolved.channels_last"] == str(hardware.channels_last(cfg, 3 if family == "nonlocal" else 2))
    assert f"hardware: precision {params['resolved.precision']}" in printed
    assert 0.0 <= result.metrics["test/acc"] <= 1.0
    assert torch.isfinite(torch.tensor(result.metrics["train/loss"]))
