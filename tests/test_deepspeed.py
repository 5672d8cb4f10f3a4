"""gdfast.torch.AdamW under DeepSpeed ZeRO (examples/deepspeed_zero.py), against
torch.optim.AdamW under the same config. Needs DeepSpeed, which the test extra does not install
(`pip install --no-build-isolation deepspeed` builds its ops against the installed torch):
skipped without it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

# (found, not imported: the example imports it in its own process, and an import here would
# leave it in sys.modules for the tests that pretend it is absent)
if importlib.util.find_spec("deepspeed") is None:
    pytest.skip("DeepSpeed is not installed (not in the test extra)", allow_module_level=True)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "deepspeed_zero.py"
if not EXAMPLE.is_file():
    pytest.skip("examples/ is not here (tests run from an installed wheel)",
                allow_module_level=True)


@pytest.mark.parametrize("args", [["--stage", "0"], ["--stage", "1"], ["--stage", "2", "--offload"],
                                  ["--stage", "3"], ["--stage", "3", "--offload"]],
                         ids=lambda a: "-".join(x.strip("-") for x in a))
def test_zero_stages_step_as_torch_optim(args, tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLE), *args, "--steps", "5"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = re.search(r"largest param difference (\S+) \(largest param (\S+)\)", out.stdout)
    assert found, out.stdout
    difference, scale = float(found.group(1)), float(found.group(2))
    # float32 params of magnitude <= scale: one rounding of difference per step at most, so
    # 5 steps stay within 5 units in the last place (2**-23 relative).
    assert difference <= 5 * scale * 2.0 ** -23
