"""benchmarks/_record.py, the JSON record every benchmark script writes: on a tiny fake result,
every field is there, the file is strict JSON, and the git commit is the checkout's."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"format", "script", "date", "finished", "command", "arguments", "machine", "versions",
          "git", "figures", "output"}


def _load_record() -> ModuleType:
    """benchmarks/_record.py as a module (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("_record", ROOT / "benchmarks" / "_record.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _load_record()


def _strict_json(path: Path) -> dict:
    """The file parsed as JSON that has no NaN or Infinity (which json.loads would accept)."""
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_record_holds_machine_versions_commit_command_and_figures(tmp_path, capsys):
    args = argparse.Namespace(repeats=3, widths=[0.25], json_out=None)
    argv = ["benchmarks/fake.py", "--repeats", "3", "--widths", "0.25"]
    stdout = sys.stdout
    recorder = record.Recorder("benchmarks/fake.py", args, argv=argv)
    print("| width | img/s |\n|---|---|\n| 0.25 | 755 |")
    path = recorder.write({"rate": 755.25, "lost": float("nan"), "rows": [(0.25, 755)]},
                          results_dir=tmp_path)

    assert sys.stdout is stdout  # the copy of stdout stops with the record
    assert capsys.readouterr().out.startswith("| width | img/s |")
    assert re.fullmatch(r"fake-\d{8}T\d{6}Z\.json", path.name) and path.parent == tmp_path
    data = _strict_json(path)
    assert set(data) == FIELDS
    assert data["script"] == "benchmarks/fake.py"
    assert data["command"].endswith("benchmarks/fake.py --repeats 3 --widths 0.25")
    assert data["arguments"] == {"repeats": 3, "widths": [0.25]}
    assert data["figures"] == {"rate": 755.25, "lost": None, "rows": [[0.25, 755]]}
    assert data["output"] == "| width | img/s |\n|---|---|\n| 0.25 | 755 |\n"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", data["date"])
    machine = data["machine"]
    assert {"cpu_model", "cpu_count", "cores_usable", "cpu_flags", "gpu"} <= set(machine)
    assert machine["cpu_count"] >= 1 and set(machine["cpu_flags"]) <= set(
        record.CPU_FLAGS_OF_INTEREST)
    import torch

    assert data["versions"]["torch"] == torch.__version__
    assert {"python", "torchvision", "inception", "onnxruntime"} <= set(data["versions"])
    if shutil.which("git") and (ROOT / ".git").exists():
        assert data["git"]["commit"] == _git("rev-parse", "HEAD", cwd=ROOT)
        assert isinstance(data["git"]["dirty"], bool)


def test_json_out_names_the_file_and_runs_in_one_second_do_not_collide(tmp_path):
    target = tmp_path / "new" / "run.json"
    path = record.Recorder("lrn.py", argparse.Namespace(json_out=str(target))).write({"x": 1})
    assert path == target and _strict_json(target)["figures"] == {"x": 1}
    stdout = sys.stdout
    first, second = record.Recorder("lrn.py"), record.Recorder("lrn.py")
    second.started = first.started
    # Written last made first, so that each puts back the stdout it found.
    two = second.write({"x": 2}, results_dir=tmp_path / "results")
    one = first.write({"x": 1}, results_dir=tmp_path / "results")
    assert sys.stdout is stdout
    assert one == two.with_name(two.stem + "-1.json")
    assert [_strict_json(p)["figures"]["x"] for p in (one, two)] == [1, 2]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_state_reads_the_commit_and_whether_tracked_files_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert record.git_state(tmp_path) == {"commit": None, "dirty": None, "changed_files": None}
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("1\n")
    _git("init", "-q", cwd=repo)
    _git("add", "a.txt", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one",
         cwd=repo)
    head = _git("rev-parse", "HEAD", cwd=repo)
    assert record.git_state(repo) == {"commit": head, "dirty": False, "changed_files": []}
    (repo / "new.json").write_text("{}")  # an untracked file, a new record say: still clean
    assert record.git_state(repo)["dirty"] is False
    (repo / "a.txt").write_text("2\n")
    assert record.git_state(repo) == {"commit": head, "dirty": True, "changed_files": ["a.txt"]}


def test_machine_versions_and_git_are_the_librarys_provenance(tmp_path, monkeypatch):
    """A benchmark record and a run's `results.json` describe the machine in the same words:
    both come from `inception.provenance`."""
    from inception import provenance

    monkeypatch.setattr(provenance, "machine", lambda device=None: {"cpu_model": "Fake CPU"})
    monkeypatch.setattr(provenance, "versions", lambda: {"torch": "0.0-fake"})
    monkeypatch.setattr(provenance, "git_state", lambda root=None: {"commit": str(root)})
    data = _strict_json(record.Recorder("lrn.py").write({}, results_dir=tmp_path))
    assert data["machine"] == {"cpu_model": "Fake CPU"}
    assert data["versions"] == {"torch": "0.0-fake"}
    assert data["git"] == {"commit": str(ROOT)}
