"""The package: pyproject.toml builds a wheel of the seven flat modules, the installed `metatrace`
command runs outside the checkout, the metadata agrees with requirements.txt and
metatrace.__version__, and the Numba internals that nets.py calls are still there.

The builds work on a copy of the files the package is made of (pyproject.toml, its readme, the
license, the modules), so that no build/ or *.egg-info lands in the checkout."""
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import sweep

REPO = Path(__file__).resolve().parents[1]
MODULES = set(sweep.MODULES)
TEST_ONLY = {"pytest", "hypothesis", "setuptools"}   # requirements.txt lines for the tests only


def pyproject():
    try:
        import tomllib
    except ImportError:                    # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 "
                                                      "needs tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_txt():
    """requirements.txt as {normalized name: Requirement}."""
    reqs = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if line:
            r = Requirement(line)
            reqs[norm(r.name)] = r
    return reqs


def environ():
    """This environment without PYTHONPATH, so that only what is installed can be imported."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env


def sh(args, cwd, timeout):
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=environ(), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, (f"{' '.join(map(str, args))} -> exit {r.returncode}\n"
                               f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def stage(dest):
    """Copy what the package is built from into dest (no build litter in the checkout)."""
    cfg = pyproject()
    dest.mkdir()
    names = ["pyproject.toml", cfg["project"]["readme"]]
    names += [p.name for p in REPO.glob("LICEN[CS]E*")]
    names += [m + ".py" for m in cfg["tool"]["setuptools"]["py-modules"]]
    for name in names:
        shutil.copy2(REPO / name, dest / name)
    return dest


def missing_build_tools():
    """Why this interpreter cannot build the wheel without the network, or None."""
    if importlib.util.find_spec("pip") is None:
        return "pip is not installed in this interpreter"
    for line in pyproject()["build-system"]["requires"]:
        r = Requirement(line)
        try:
            have = importlib.metadata.version(r.name)
        except importlib.metadata.PackageNotFoundError:
            return f"the build requirement {r} is not installed in this interpreter"
        if not r.specifier.contains(have, prereleases=True):
            return f"the build requirement {r} is not met: {r.name} {have} is installed"
    # setuptools < 70.1 builds wheels with the separate `wheel` package (its bdist_wheel)
    if (Version(importlib.metadata.version("setuptools")) < Version("70.1")
            and importlib.util.find_spec("wheel") is None):
        return (f"setuptools {importlib.metadata.version('setuptools')} needs the wheel package "
                "to build a wheel (pip install wheel, or setuptools>=70.1)")
    return None


def bin_(venv, name):
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def purelib(python):
    return Path(sh([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=python.parent, timeout=60).stdout.strip())


def run_metatrace(venv, cwd, out, quiet=True):
    """`metatrace --domain mountaincar --episodes 5` from cwd -> config.json."""
    sh([bin_(venv, "metatrace"), "--domain", "mountaincar", "--episodes", "5",
        *(["--quiet"] if quiet else []), "--out", out], cwd=cwd, timeout=600)
    return json.loads((out / "config.json").read_text())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv seeing this interpreter's packages, with the wheel built here (no network,
    no build isolation) installed into it -> (venv, wheel, tmp)."""
    why = missing_build_tools()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("package")
    src = stage(tmp / "src")
    venv = tmp / "venv"
    sh([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv],
       cwd=tmp, timeout=120)
    python = bin_(venv, "python")
    # --system-site-packages shows the base interpreter's site-packages, not those of a venv that
    # runs pytest (the dev venv); add this interpreter's own (pip, setuptools, numba, ...) after
    # the new venv's, so that the installed modules come first.
    lib = purelib(python)
    (lib / "_parent_site.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages()))
    quiet = ["--disable-pip-version-check", "--no-input", "-q"]
    sh([python, "-m", "pip", "wheel", *quiet, "--no-deps", "--no-build-isolation", "--no-index",
        "-w", tmp / "wheels", src], cwd=tmp, timeout=300)
    (wheel,) = (tmp / "wheels").glob("metatrace-*.whl")
    sh([python, "-m", "pip", "install", *quiet, "--no-deps", "--no-index", "--ignore-installed",
        wheel], cwd=tmp, timeout=300)
    return venv, wheel, tmp


def test_wheel_holds_the_modules_and_nothing_else(installed):
    _, wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {n for n in names if "/" not in n}
    assert top == {m + ".py" for m in MODULES}, sorted(names)
    assert not [n for n in names if n.startswith(("tests/", "docs/"))], sorted(names)
    info = [n for n in names if ".dist-info/" in n]
    assert any(n.endswith("/LICENSE") for n in info), info
    entry = next(n for n in info if n.endswith("/entry_points.txt"))
    assert "metatrace = run:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_command_runs_outside_the_checkout(installed):
    """`metatrace` (the console script, run.main's exit code) from a directory that is not the
    checkout, without PYTHONPATH, imports the installed modules and finishes a run."""
    venv, _, tmp = installed
    work = tmp / "work"
    work.mkdir()
    cfg = run_metatrace(venv, work, tmp / "r")
    assert cfg["status"] == "finished"
    assert cfg["provenance"]["command"][0] == "metatrace"
    r = sh([bin_(venv, "python"), "-c",
            "import json, algorithms, bench, envs, figures, metatrace, nets, run; "
            "print(json.dumps({m.__name__: m.__file__ for m in "
            "(algorithms, bench, envs, figures, metatrace, nets, run)}))"], cwd=work, timeout=120)
    files = json.loads(r.stdout)
    lib = purelib(bin_(venv, "python")).resolve()
    for name, file in files.items():
        assert Path(file).resolve().parent == lib, (name, file, lib)
    # the exit code passes through the console script: bad input -> run.main returns 2
    bad = subprocess.run([str(bin_(venv, "metatrace")), "--domain", "mountaincar", "--episodes",
                          "0", "--out", str(tmp / "bad")], cwd=work, env=environ(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "error" in bad.stderr, (bad.returncode, bad.stderr)
    assert bad.stderr.startswith("metatrace: error:"), bad.stderr
    usage = sh([bin_(venv, "metatrace"), "--help"], cwd=work, timeout=120).stdout
    assert usage.startswith("usage: metatrace ") and "run.py" not in usage.splitlines()[0]
    sweep_usage = sh([bin_(venv, "metatrace"), "sweep", "--help"], cwd=work, timeout=120).stdout
    assert sweep_usage.startswith("usage: metatrace sweep ")


def test_installed_command_says_its_version(installed):
    venv, _, tmp = installed
    r = sh([bin_(venv, "metatrace"), "--version"], cwd=tmp, timeout=120)
    source = re.search(r'^__version__ = "([^"]+)"$', (REPO / "metatrace.py").read_text(), re.M)
    assert r.stdout == f"metatrace {source.group(1)}\n"


def test_installed_version_is_the_metadata_version(installed):
    venv, _, tmp = installed
    r = sh([bin_(venv, "python"), "-c",
            "import importlib.metadata, metatrace; "
            "print(metatrace.__version__, importlib.metadata.version('metatrace'))"],
           cwd=tmp, timeout=120)
    module_version, metadata_version = r.stdout.split()
    assert module_version == metadata_version
    source = re.search(r'^__version__ = "([^"]+)"$', (REPO / "metatrace.py").read_text(), re.M)
    assert source and source.group(1) == module_version


def test_pyproject_dependencies_are_requirements_txt():
    """pyproject's dependencies are requirements.txt's runtime lines (same names and bounds);
    its `test` extra holds the rest (pytest, hypothesis)."""
    cfg = pyproject()["project"]
    runtime = {norm(Requirement(d).name): Requirement(d) for d in cfg["dependencies"]}
    test = {norm(Requirement(d).name): Requirement(d)
            for d in cfg["optional-dependencies"]["test"]}
    reqs = requirements_txt()
    want_runtime = {k: r for k, r in reqs.items() if k not in TEST_ONLY}
    want_test = {k: r for k, r in reqs.items() if k in TEST_ONLY}
    assert runtime.keys() == want_runtime.keys(), (
        f"only in pyproject: {sorted(runtime.keys() - want_runtime.keys())}; "
        f"only in requirements.txt: {sorted(want_runtime.keys() - runtime.keys())}")
    assert test.keys() == want_test.keys()
    for have, want in ((runtime, want_runtime), (test, want_test)):
        for k, r in want.items():
            assert have[k].specifier == r.specifier, f"{k}: pyproject {have[k]}, requirements {r}"
    assert cfg["requires-python"] == ">=3.10"
    assert set(pyproject()["tool"]["setuptools"]["py-modules"]) == MODULES


# ---- The Numba internals behind nets._matmul / nets._matvec ------------------------------------
# nets.py declares types.ExternalFunction("numba_xxgemm" / "numba_xxgemv", ...): C functions that
# numba compiles into numba._helperlib (its c_helpers table: "xxgemm" -> address) and that
# numba.core.base._load_global_helpers() puts into LLVM's symbol table as "numba_" + name.
# None of this is public API.  If a release drops or renames them, compiled code calls a null
# symbol: the process dies (a segfault) at the first matrix product, with no Python error.

PIN = ("pin numba below this version in pyproject.toml and requirements.txt (numba<{v}), or port "
       "nets._matmul/_matvec to what this numba provides")


def numba_bound():
    """pyproject.toml's numba specifier (e.g. >=0.60,<0.70)."""
    (spec,) = [Requirement(d).specifier for d in pyproject()["project"]["dependencies"]
               if norm(Requirement(d).name) == "numba"]
    return spec


def test_numba_blas_helpers_are_there():
    import llvmlite.binding as ll
    import numba
    from numba.core import base

    import nets
    helpers = getattr(getattr(numba, "_helperlib", None), "c_helpers", None)
    assert isinstance(helpers, dict), (
        f"numba {numba.__version__} has no numba._helperlib.c_helpers; " + PIN.format(
            v=numba.__version__))
    base._load_global_helpers()      # what numba does before it compiles anything
    for ext, name in ((nets._xxgemm, "xxgemm"), (nets._xxgemv, "xxgemv")):
        assert ext.symbol == "numba_" + name
        address = helpers.get(name)
        assert isinstance(address, int) and address, (
            f"numba {numba.__version__} moved or removed {ext.symbol}, which nets.py calls; "
            + PIN.format(v=numba.__version__))
        assert ll.address_of_symbol(ext.symbol) == address, (
            f"numba {numba.__version__} no longer registers {name} as LLVM symbol {ext.symbol}; "
            + PIN.format(v=numba.__version__))


def test_numba_xxgemm_signature_is_the_one_nets_declares():
    """numba's own declaration of numba_xxgemm (numba.np.linalg) has nets.py's argument list,
    with typed pointers where nets.py passes void*."""
    import numba
    from numba import types
    from numba.np.linalg import _BLAS

    import nets

    def shape(sig):
        return [("ptr" if isinstance(t, (types.CPointer, types.RawPointer)) else t)
                for t in (sig.return_type, *sig.args)]
    theirs = _BLAS.numba_xxgemm(types.float32)
    assert theirs.symbol == nets._xxgemm.symbol
    assert shape(theirs.sig) == shape(nets._xxgemm.sig), (
        f"numba {numba.__version__} changed numba_xxgemm's signature to {theirs.sig}; nets.py "
        f"declares {nets._xxgemm.sig}; " + PIN.format(v=numba.__version__))


def test_matmul_and_matvec_agree_with_numpy():
    import numpy as np

    import nets
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a, b = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
        c, ab = np.zeros((3, 5), dtype), np.zeros(2, dtype)
        nets._matmul(c.ravel(), a.ravel(), b.ravel(), 3, 5, 4, False, False, 0.0, ab)
        np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)
        wm, x, y = rng.standard_normal((4, 5)).astype(dtype), rng.standard_normal(4).astype(dtype), \
            np.zeros(5, dtype)
        nets._matvec(y, wm.ravel(), x, 4, 5, False, 0.0, ab)
        np.testing.assert_allclose(y, wm.T @ x, rtol=1e-5, atol=1e-5)


def test_numba_is_within_the_pinned_range():
    """The numba these tests run with is one the package allows (else they test something else)."""
    import numba
    spec = numba_bound()
    assert spec.contains(numba.__version__, prereleases=True), (
        f"numba {numba.__version__} is outside pyproject.toml's numba{spec}: if the tests above "
        "pass with it, widen the bound in pyproject.toml and requirements.txt")


def test_nets_import_fails_clearly_without_blas_helpers():
    """With the helper gone, `import nets` raises an ImportError that names it."""
    code = ("from numba import _helperlib\n"
            "del _helperlib.c_helpers['xxgemm']\n"
            "try:\n"
            "    import nets\n"
            "except ImportError as e:\n"
            "    print('ImportError:', e)\n"
            "else:\n"
            "    print('imported')\n")
    env = environ()
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    if r.stdout.startswith("imported"):
        pytest.skip("nets.py does not yet check for numba_xxgemm/numba_xxgemv at import time "
                    "(without them the first matrix product segfaults)")
    spec = numba_bound()
    # it names the helper and the numba versions to install (pyproject.toml's bound)
    assert "numba_xxgemm" in r.stdout and all(str(s) in r.stdout for s in spec), r.stdout


@pytest.mark.slow
def test_pip_install_from_the_package_index(tmp_path):
    """The whole thing: a venv of its own (no system site-packages), `pip install` of the source
    with build isolation and the dependencies from the package index, then `metatrace`."""
    venv = tmp_path / "venv"
    sh([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=300)
    python = bin_(venv, "python")
    src = stage(tmp_path / "src")
    sh([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", src],
       cwd=tmp_path, timeout=3600)
    sh([python, "-m", "pip", "check"], cwd=tmp_path, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    cfg = run_metatrace(venv, work, tmp_path / "r", quiet=False)
    assert cfg["status"] == "finished"
    r = sh([python, "-c", "import importlib.metadata, metatrace; "
            "print(metatrace.__file__, metatrace.__version__, "
            "importlib.metadata.version('metatrace'))"], cwd=work, timeout=120)
    file, module_version, metadata_version = r.stdout.split()
    assert Path(file).resolve().is_relative_to(venv.resolve())
    assert module_version == metadata_version
