"""Packaging: the base install runs without the optional extras, each feature that needs one
names it in a one-line error, the wheel carries its data (the demo's pipeline and trace, the
KEDA proto, LICENSE), and `elastiscale demo` runs outside the checkout.

The "without the extra" cases run in a subprocess whose imports of that extra's modules fail
as if it were not installed (a meta-path finder), so modules already loaded here do not hide
a missing one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from elastiscale.demo import PIPELINE, TRACE, data_path
from elastiscale.extras import EXTRAS, MODULE_EXTRAS

REPO = Path(__file__).resolve().parent.parent

_BLOCKER = """
import shutil
import sys
import tarfile
from importlib.abc import MetaPathFinder
BLOCKED = set(sys.argv.pop(1).split(","))
class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
from elastiscale.cli import main
sys.exit(main(sys.argv[1:]))
"""


def without(modules: str, *argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`elastiscale ARGV` with `modules` (comma-separated top-level names) not importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER, modules, *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def without_code(modules: str, code: str) -> subprocess.CompletedProcess[str]:
    """Python `code` with `modules` not importable."""
    blocker = _BLOCKER.split("from elastiscale.cli import main")[0]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-c", blocker + code, modules],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


EVERY_EXTRA = ",".join(sorted(MODULE_EXTRAS))


def test_the_extras_in_pyproject_are_the_ones_the_code_names() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert set(MODULE_EXTRAS.values()) <= set(EXTRAS)
    assert extras["all"] == [f"elastiscale[{','.join(EXTRAS)}]"]
    base = " ".join(meta["dependencies"])
    for heavy in ("kubernetes", "statsmodels", "matplotlib", "ray", "boto3", "grpcio"):
        assert heavy not in base, heavy
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_the_base_install_validates_and_backtests_without_any_extra(tmp_path: Path) -> None:
    done = without(
        EVERY_EXTRA,
        "backtest",
        str(REPO / "examples/pipelines/agent.yaml"),
        "--trace",
        str(REPO / "examples/traces/azure_llm_2023_conv_1s.csv"),
        "--end",
        "900",
        "--policy",
        "hpa",
        "--policy",
        "elastiscale",
        "--no-plots",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out/report.json").exists()


@pytest.mark.parametrize(
    ("blocked", "argv", "message"),
    [
        (
            "kubernetes",
            ["validate", "examples/kubernetes/pipeline.yaml"],
            "actuator.type: actuator 'kubernetes' needs the optional extra 'kubernetes' "
            "(module 'kubernetes' is not installed): pip install 'elastiscale[kubernetes]'",
        ),
        (
            "matplotlib",
            [
                "backtest",
                "examples/pipelines/agent.yaml",
                "--trace",
                "examples/traces/azure_llm_2023_conv_1s.csv",
            ],
            "elastiscale backtest: backtest plots (or pass --no-plots) needs the optional "
            "extra 'plots' (module 'matplotlib' is not installed): pip install "
            "'elastiscale[plots]'",
        ),
        (
            "matplotlib",
            ["forecast-eval", "--trace", "examples/traces/azure_llm_2023_conv_1s.csv"],
            "forecast-eval plots (or pass --no-plot) needs the optional extra 'plots'",
        ),
        (
            "grpc",
            [
                "run",
                "examples/keda/pipeline.yaml",
                "--keda-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--journal",
                "/tmp/elastiscale-packaging-test-journal.jsonl",
            ],
            "elastiscale run --keda-listen needs the optional extra 'keda' (module 'grpc' is "
            "not installed): pip install 'elastiscale[keda]'",
        ),
    ],
)
def test_a_feature_without_its_extra_is_one_line_naming_it(
    blocked: str, argv: list[str], message: str
) -> None:
    done = without(blocked, *argv)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "optional extra" in line]
    assert len(errors) == 1 and message in errors[0], done.stderr


def test_the_statsmodels_forecasters_without_forecast_name_the_extra() -> None:
    """With a day of 5-minute bins and a fixed daily period, holt-winters reaches its fit."""
    code = (
        "import numpy as np\n"
        "from elastiscale.forecasting.grid import GridContext\n"
        "from elastiscale.forecasting.holt_winters import HoltWintersModel\n"
        "y = 10 + np.sin(np.arange(3 * 288) * 2 * np.pi / 288)\n"
        "model = HoltWintersModel('daily', 86400.0, 0.0, False)\n"
        "model.fit(y, GridContext(step_s=300, first_bin=0, horizons=(1,)))\n"
    )
    done = without_code("statsmodels", code)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "elastiscale.extras.MissingExtraError: forecaster 'holt-winters' needs the optional "
        "extra 'forecast' (module 'statsmodels' is not installed): pip install "
        "'elastiscale[forecast]'"
    )


def test_the_wheel_carries_its_data_and_the_demo_runs_outside_the_checkout(
    tmp_path: Path,
) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = wheels.glob("elastiscale-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        f"elastiscale/data/{PIPELINE}",
        f"elastiscale/data/{TRACE}",
        "elastiscale/keda/externalscaler.proto",
        "elastiscale/keda/externalscaler_pb2.pyi",
        "elastiscale/py.typed",
    ):
        assert needed in names, needed
    assert any(n.endswith("licenses/LICENSE") for n in names)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "elastiscale.cli",
            "demo",
            "--policy",
            "hpa",
            "--no-plots",
            "--out",
            "out",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert str(site) in done.stdout  # the bundled files, not the checkout's
    assert (elsewhere / "out/report.json").exists()


def test_the_bundled_demo_files_are_the_examples() -> None:
    assert data_path(PIPELINE).read_bytes() == (REPO / "examples/pipelines" / PIPELINE).read_bytes()
    assert data_path(TRACE).read_bytes() == (REPO / "examples/traces" / TRACE).read_bytes()


def test_the_sdist_is_the_package_and_its_metadata_without_the_tests(tmp_path: Path) -> None:
    """Built as `python -m build --sdist --no-isolation` would (setuptools' build_sdist), from
    a copy of what the checkout tracks, so the checkout gets no egg-info."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(REPO / name, source / name)
    for tree in ("src", "tests"):
        shutil.copytree(
            REPO / tree, source / tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    done = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta as b; b.build_sdist('dist')"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (sdist,) = (source / "dist").glob("elastiscale-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert not any(n.startswith("tests") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert {"README.md", "LICENSE", "pyproject.toml", "PKG-INFO"} <= names
    package = REPO / "src"
    shipped = {
        str(p.relative_to(REPO))
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
    }
    assert shipped <= names, sorted(shipped - names)


def test_the_image_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore admits only the package sources and metadata (not .venv, .git or out/), and
    every COPY of the build stage is among them."""
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in (REPO / ".dockerignore").read_text().splitlines()
    copied: set[str] = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(p.rstrip("/").removeprefix("./") for p in line.split()[1:-1])
    assert copied and copied <= allowed, copied - allowed
    assert all((REPO / p).exists() for p in copied)


_NO_AIO = """
import sys
from importlib.abc import MetaPathFinder
DROPPED = ("kubernetes.aio",)
class Dropped(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == d or name.startswith(d + ".") for d in DROPPED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Dropped())
try:
    import kubernetes.aio
except ModuleNotFoundError:
    pass
else:
    sys.exit("kubernetes.aio imported: the finder does not drop it")
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""


def test_the_sidecar_runs_without_what_the_image_drops() -> None:
    """The Dockerfile removes `kubernetes.aio`: the actuator, its readiness checks and leader
    election, against the wire fake through the official client, pass without it."""
    assert "kubernetes/aio" in (REPO / "Dockerfile").read_text()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _NO_AIO,
            "tests/test_kubernetes_actuator.py",
            "tests/test_kubernetes_readiness.py",
            "tests/test_daemon_leader.py",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
