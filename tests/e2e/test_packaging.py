"""What `pip install .` and `flwr build` give a user: a wheel and a FAB that hold the app.

The wheel is built from this checkout (offline: ``--no-build-isolation``, hatchling comes
with ``.[dev]``), installed with ``--no-deps`` into a fresh venv that sees this environment's
packages, and run from a folder outside the checkout, so the editable install cannot stand
in for it. The FAB is built with ``flwr build`` as a user would. Together about a minute.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.slow

PACKAGES = ("server_app", "client_app", "profl_strategy")

# Run in the venv, from outside the checkout: where the packages and configs come from, the
# default preset composed; given more keys than the preset, one round on the in-process engine
# (server_app.inprocess) with the wheel's ServerApp and ClientApp.
CHECK = textwrap.dedent(
    """
    import json, sys
    import client_app.app, profl_strategy.run.config, server_app.app
    from profl_strategy.run.config import CONF_DIR, compose_config

    run_config = json.loads(sys.argv[1])
    report = {
        "files": [m.__file__ for m in (server_app.app, client_app.app, profl_strategy.run.config)],
        "namespace": list(profl_strategy.__path__),  # no __init__.py: every portion counts
        "conf_dir": str(CONF_DIR),
        "dataset": compose_config({"preset": run_config["preset"]}).dataset.name,
    }
    if len(run_config) > 1:
        from server_app.inprocess import InProcessGrid
        nodes = [{"partition-id": i, "num-partitions": 20} for i in range(20)]
        grid = InProcessGrid(nodes, client_app.app.app)
        report["run_dir"] = str(server_app.app.run_profl(grid, run_config)["run_dir"])
    print(json.dumps(report))
    """
)


def default_preset() -> str:
    """The preset a bare ``flwr run .`` composes (``[tool.flwr.app.config]``)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["flwr"]["app"]["config"]["preset"]


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``cmd`` without the checkout on any import path; fails with its output."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip install .`` builds from this checkout."""
    dist = tmp_path_factory.mktemp("dist")
    try:
        import hatchling  # noqa: F401 - the build backend, needed without build isolation
    except ImportError:
        pytest.fail("hatchling is not installed; `pip install -e '.[dev]'` brings it")
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(dist), str(REPO)],
        cwd=dist,
    )  # fmt: skip
    (built,) = dist.glob("profl-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A venv holding the wheel and seeing this environment's packages, not the checkout.

    ``--system-site-packages`` sees the base interpreter's packages only; where the tests
    run in a venv, its site-packages is added as plain path lines, which (unlike
    ``site.addsitedir``) skip its ``.pth`` files, the editable install's among them.
    """
    root = tmp_path_factory.mktemp("venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
        check=True,
    )
    python = root / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                  cwd=root).stdout.strip()  # fmt: skip
    if sys.prefix != sys.base_prefix:
        ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
        ours |= set(site.getsitepackages())
        (Path(purelib) / "_test_environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)],
        cwd=root,
    )  # fmt: skip
    return root


def test_the_wheel_carries_the_configs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    conf = sorted(p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml"))
    assert conf, "conf/ holds no YAML"
    assert [n for n in conf if f"profl_strategy/_conf/{n}" not in names] == []
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dist_info = f"{project['name']}-{project['version']}.dist-info"
    assert {n.split("/")[0] for n in names} == {*PACKAGES, dist_info}


def check_in_venv(venv: Path, cwd: Path, run_config: dict) -> dict:
    """:data:`CHECK`'s report, after asserting that it ran the wheel, not the checkout."""
    proc = run([str(venv / "bin" / "python"), "-c", CHECK, json.dumps(run_config)], cwd)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for file in report["files"] + [report["conf_dir"]]:
        assert Path(file).resolve().is_relative_to(venv.resolve()), report
    # No portion of the namespace package from the checkout. (An editable install of the
    # test environment leaves a `profl_strategy/_conf` copy in its site-packages, which the
    # venv sees; nothing imports from it.)
    source = (REPO / "profl_strategy").resolve()
    assert all(Path(portion).resolve() != source for portion in report["namespace"]), report
    return report


def test_the_installed_wheel_finds_its_configs(venv: Path, tmp_path: Path) -> None:
    report = check_in_venv(venv, tmp_path, {"preset": default_preset()})
    assert Path(report["conf_dir"]).name == "_conf"
    assert report["dataset"] == "fmnist"


def test_the_installed_wheel_runs_a_round(venv: Path, tmp_path: Path, data_dir: Path) -> None:
    run_config = {
        "preset": default_preset(),
        "data-dir": str(data_dir),
        "outputs-dir": str(tmp_path / "outputs"),
        "num-server-rounds": 1,
        # the lightest round the preset allows: a narrow model, one node on a sliver of data
        "width": 0.25,
        "plans": "off",
        "fraction-train": 0.1,
        "data-subsample": 0.05,
        "eval-test-size": 200,
    }
    report = check_in_venv(venv, tmp_path, run_config)
    results = json.loads((Path(report["run_dir"]) / "results.json").read_text())
    assert len(results["rounds"]) == 1, results["rounds"]


def test_the_fab_holds_the_app_and_nothing_else(tmp_path: Path) -> None:
    flwr = Path(sys.executable).parent / "flwr"  # this environment's Flower CLI
    run([str(flwr), "build", "--app", str(REPO)], cwd=tmp_path, timeout=120)
    (fab,) = tmp_path.glob("*.fab")
    names = zipfile.ZipFile(fab).namelist()
    stray = [n for n in names if n.startswith(("benchmarks/", "docs/", "tests/", "deploy/"))]
    assert stray == [], f"{len(stray)} files outside the app, e.g. {stray[:5]}"
    assert {n.split("/")[0] for n in names} == {
        *PACKAGES,
        "conf",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        ".info",
    }
    conf = {
        f"conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")
    }
    assert conf <= set(names)
    assert "profl_strategy/run/config.py" in names
    # the ServerApp and ClientApp the FAB's pyproject names are in it
    fab_config = tomllib.loads(zipfile.ZipFile(fab).read("pyproject.toml").decode())
    for ref in fab_config["tool"]["flwr"]["app"]["components"].values():
        assert ref.split(":")[0].replace(".", "/") + ".py" in names
