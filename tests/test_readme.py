"""README's fast path, run line by line exactly as a user would paste it (in a fresh folder, so
its run folders start empty), each line's `testbed` being the installed console script."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fast_path_lines() -> list[str]:
    """The shell lines of the block after README's ``<!-- fast-path -->`` marker."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- fast-path -->\s*```sh\n(.*?)```", text, re.S)
    assert match, "README.md has no fast-path block"
    lines = [line.strip() for line in match.group(1).splitlines() if line.strip()]
    assert lines and all(line.startswith("testbed ") for line in lines)
    return lines


@pytest.mark.slow
def test_the_readme_fast_path_runs_as_written(tmp_path):
    testbed = shutil.which("testbed") or pytest.fail("the testbed console script is not installed")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for line in fast_path_lines():
        args = shlex.split(line)
        done = subprocess.run([testbed, *args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, line
    for sub in ("demo", "train/checkpoints/latest.pt", "adapt/metrics.jsonl", "evaluate/summary.json"):
        assert (tmp_path / "runs" / "fast" / sub).exists(), sub
