"""The README's quick start and examples/quickstart.py run as written."""

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_quick_start():
    assert _python_blocks(), "README.md lost its python quick start"


@pytest.mark.parametrize("block", _python_blocks())
def test_readme_block_runs(block):
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    model = namespace["model"]
    # Fifty schools were simulated around slopes of 1: the shared part finds them.
    assert model.coef_.shape == (50, 3)
    assert abs(model.shared_coef_ - 1.0).max() < 0.1


def test_quickstart_example_beats_pooled_and_per_task_ridge(capsys):
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    scores = {
        m.group(1): float(m.group(2))
        for line in lines[1:]
        if (m := re.match(r"\s+(.*?)\s+(-?[0-9.]+)\s+fit", line))
    }
    assert len(scores) == 4
    for name in ("SharedParamRegressor, grid", "SharedParamRegressor, 'auto'"):
        assert scores[name] > scores["pooled Ridge"]
        assert scores[name] > scores["one Ridge per school"]
