"""Every run and evaluation records what made it (`inception.provenance`): package versions, the
git commit of the code when it runs from a checkout, the command line and the machine."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import inception
from inception import provenance
from inception.cli import main
from inception.recipes import get_recipe
from inception.train import train

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"date", "command", "argv", "versions", "git", "machine"}
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def _one_thread(_deterministic_threads):
    """One torch thread: these tiny runs gain nothing from two on a busy machine."""
    torch.set_num_threads(1)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def _check(record: dict, device: str = "cpu") -> None:
    """`record` is a provenance record of work done on `device` by this process."""
    assert set(record) == FIELDS
    assert record["argv"] == sys.argv and record["command"] == shlex.join(sys.argv)
    versions = record["versions"]
    assert versions["torch"] == torch.__version__
    assert versions["inception"] == inception.__version__
    assert {"python", "torchvision", "onnxruntime"} <= set(versions)
    machine = record["machine"]
    assert machine["cpu_count"] == os.cpu_count() and machine["cores_usable"] >= 1
    assert machine["cpu_model"] is None or isinstance(machine["cpu_model"], str)
    if device == "cpu":
        assert machine["gpu"] is None  # a GPU in the machine did not run it
    assert set(record["git"]) == {"commit", "dirty", "changed_files"}


def test_provenance_names_versions_command_machine_and_the_code(monkeypatch):
    record = provenance.provenance(torch.device("cpu"))
    _check(record)
    json.dumps(record, allow_nan=False)  # strict JSON as it is
    tracked = (Path(inception.__file__).resolve().parent / "__init__.py").is_relative_to(ROOT)
    if shutil.which("git") and (ROOT / ".git").exists() and tracked:
        assert record["git"]["commit"] == _git("rev-parse", "HEAD", cwd=ROOT)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    assert provenance.machine(torch.device("cuda", 0))["gpu"] == "Fake GPU"
    assert provenance.machine(torch.device("cpu"))["gpu"] is None


@needs_git
def test_a_copy_of_the_package_inside_another_repository_reports_no_commit(tmp_path,
                                                                           monkeypatch):
    """An installed copy (a virtual environment inside a project's repository) is not that
    repository's code: no commit rather than the project's."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    project = tmp_path / "project"
    package = project / ".venv" / "site-packages" / "inception"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (project / "a.txt").write_text("1\n")
    _git("init", "-q", cwd=project)
    _git("add", "a.txt", cwd=project)
    _git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one",
         cwd=project)
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
    none = {"commit": None, "dirty": None, "changed_files": None}
    assert provenance.git_state() == none
    _git("add", "-f", str(package / "__init__.py"), cwd=project)  # now the checkout's own code
    assert provenance.git_state()["commit"] == _git("rev-parse", "HEAD", cwd=project)
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)  # no repository at all
    assert provenance.git_state() == none


def test_results_json_of_a_run_records_what_made_it(tmp_path, small_fashion_mnist_dir):
    cfg = get_recipe("fashion-mnist").replace(width=0.125, subset=64, epochs=1, batch_size=32,
                                              workers=0)
    run = train(cfg, out=tmp_path / "run", progress=False, data_dir=small_fashion_mnist_dir,
                device="cpu")
    results = json.loads((run.run_dir / "results.json").read_text())
    _check(results["provenance"])
    assert run.results["provenance"] == results["provenance"]


def test_an_evaluation_records_what_made_it(tmp_path, fashion_model, small_fashion_mnist_dir,
                                            capsys):
    assert main(["eval", str(fashion_model), "--subset", "32", "--data-dir",
                 small_fashion_mnist_dir, "--out", str(tmp_path), "--threads", "1",
                 "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (path,) = tmp_path.glob("eval-*.json")
    written = json.loads(path.read_text())
    _check(written["provenance"])
    assert printed["provenance"] == written["provenance"]
