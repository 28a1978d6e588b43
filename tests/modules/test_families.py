"""The family registry: every block family declared once, and what the layers above read from it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modules.blocks import BLOCKS
from modules.families import FAMILIES, Family, family
from modules.lightning import MODULES
from modules.placement import DEFAULT_PRESETS, PRESETS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_is_read_from_its_one_declaration(name):
    declared = FAMILIES[name]
    assert BLOCKS[name] is declared.block_class()
    assert DEFAULT_PRESETS[name] == declared.default_preset and declared.default_preset in PRESETS
    assert MODULES[name].family == name
    assert declared.options() and "reduction" not in declared.options() and "dim" not in declared.options()


def test_an_unknown_family_and_a_bad_attach_point_are_refused():
    with pytest.raises(ValueError, match=r"unknown block kind 'cbam'; valid kinds: \['nonlocal', 'se', 'selfattn'\]"):
        family("cbam")
    with pytest.raises(ValueError, match="attach points \\['middle'\\] must be among"):
        Family(name="x", label="x", block="m:X", default_preset="se-all", reduction="", attach="middle")


TOY_BLOCK = '''
from torch import nn


class ToyGate(nn.Module):
    """A gate like SE without the squeeze: x * sigmoid(W2 relu(W1 x) + bias)."""

    def __init__(self, channels, *, dim=2, reduction=4, bias=0.0):
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dim]
        self.gate = nn.Sequential(conv(channels, channels // reduction, 1), nn.ReLU(),
                                  conv(channels // reduction, channels, 1))
        self.bias = bias

    def forward(self, x):
        return x * (self.gate(x) + self.bias).sigmoid()
'''

REGISTER_AND_USE = '''
import json
import modules.families as families

# The one registry entry (docs/extending.md), made before anything reads the table.
families.FAMILIES["gate"] = families.Family(
    name="gate", label="gate", block="toy_gate:ToyGate", default_preset="se-stage3",
    reduction="gate bottleneck C -> C/r", attach="branch")

from modules.blocks import BLOCKS, make_block
from modules.lightning import MODULES
from modules.placement import DEFAULT_PRESETS
from training.config import ConfigError, validate_config
from tuning.budget import estimate
from tuning.config import plan_search, validate_search_config

raw = {"name": "gate-run", "data": {"kind": "image", "dataset": "fashion_mnist"},
       "model": {"family": "gate", "backbone": "resnet18_small", "reduction": 8, "block": {"bias": 0.5}}}
cfg = validate_config(raw)
net = cfg.model.build(num_classes=10, in_channels=1)
found = {"blocks": sorted(n for n, m in net.named_modules() if isinstance(m, BLOCKS["gate"])),
         "bias": [m.bias for m in net.modules() if isinstance(m, BLOCKS["gate"])][0],
         "module": MODULES["gate"].family, "default": DEFAULT_PRESETS["gate"],
         "made": type(make_block("gate", 16, reduction=2)).__name__,
         "block_channels": list(estimate(cfg.model, (1, 28, 28)).block_channels)}
for key, bad in (("option", {**raw["model"], "block": {"colour": 1}}), ("family", {**raw["model"], "family": "gait"})):
    try:
        validate_config({**raw, "model": bad})
    except ConfigError as error:
        found[key] = str(error)
try:
    plan_search(validate_search_config({**raw, "search": {"space": {"model.reduction": {"grid": [3]}}}}))
except ConfigError as error:
    found["search"] = str(error)
print(json.dumps(found))
'''


def test_a_family_declared_once_reaches_every_layer(tmp_path):
    """Adding a family is its block file plus one registry entry: the blocks, the LightningModules, the
    config schema, the network builder, the budget and the search space all pick it up."""
    (tmp_path / "toy_gate.py").write_text(TOY_BLOCK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", REGISTER_AND_USE], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["blocks"] == ["res3.0.branch", "res3.1.branch"] and found["bias"] == 0.5
    assert (found["module"], found["default"], found["made"]) == ("gate", "se-stage3", "ToyGate")
    assert found["block_channels"] == [128, 128]
    assert "model.block: unknown option(s) colour for family 'gate'; allowed: bias" in found["option"]
    assert "model.family: 'gait' is not one of nonlocal, se, selfattn, gate, none" in found["family"]
    assert "3 does not divide the 128 channels of the gate blocks" in found["search"]
