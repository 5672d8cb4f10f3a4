"""examples/gradient_descent_lessons.py, on a small budget: each panel's claim holds (they are
deterministic: fixed data order, and gdfast's results do not depend on threads or ISA), and
the picture is written."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gradient_descent_lessons.py"
if not EXAMPLE.is_file():
    pytest.skip("examples/ is not here (tests run from an installed wheel)",
                allow_module_level=True)
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("gradient_descent_lessons", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def panels(example):
    return example.lessons(epochs=6)


def _final(panels, title_start, label_start):
    (curves,) = [c for t, c in panels.items() if t.startswith(title_start)]
    (curve,) = [c for label, c in curves.items() if label.startswith(label_start)]
    return curve[-1]


def test_each_panel_shows_its_lesson(panels):
    start = next(iter(next(iter(panels.values())).values()))[0]
    assert start == pytest.approx(0.5)  # (zero weights: half the squared one-hot norm)
    batch = [_final(panels, "batch", k) for k in ("batch", "mini-batch", "stochastic")]
    assert batch[0] > batch[1] > batch[2]  # more steps per pass, further per pass
    assert _final(panels, "the learning rate", "too large") == math.inf  # diverges
    assert _final(panels, "the learning rate", "about right") < 0.8 * _final(
        panels, "the learning rate", "too small")
    assert _final(panels, "momentum", "0.9") < 0.8 * _final(panels, "momentum", "none")
    for label in ("SGD", "Adam", "RMSprop", "Lion", "Sophia"):
        assert _final(panels, "optimizers", label) < 0.5 * start
    assert _final(panels, "exploding", "not clipped") == math.inf
    assert _final(panels, "exploding", "max_grad_norm") < 0.5 * start  # clipping keeps it sane
    assert _final(panels, "a schedule", "cosine") < _final(panels, "a schedule", "constant")


def test_the_picture_is_written(example, panels, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "lessons.png"
    example.plot(panels, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
