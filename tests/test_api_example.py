"""The README's Python API example (the README's python block) runs as written, with small settings.

The python code block is extracted and executed in a temporary folder; only the sampler
configuration of step 4 (the full default runcard) is swapped for the quick one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_doc_has_one_python_block():
    assert len(python_blocks(DOC.read_text())) == 1


@pytest.mark.slow
def test_api_example_runs(tmp_path, monkeypatch):
    from smeft_pyhf.fit import run as run_module
    from smeft_pyhf.sampler.pipeline import SamplerConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_module, "build_sampler_config",
                        lambda *args, **kwargs: SamplerConfig.reduced())
    code = python_blocks(DOC.read_text())[0]
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert (tmp_path / "ttZ.card.yaml").is_file()
    assert (tmp_path / "my_results" / "results.json").is_file()
    results = namespace["results"]
    assert results.names == ("ctG", "ctZ", "ctW", "cpQM", "c8qt")
    assert namespace["sampled"].profile_result.best_fit.shape == (3,)
