"""One error family: every user-caused error is an AttncmpError, printed by the real CLI as one
line with a non-zero exit; anything else is a bug and shows its traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import attncmp
import pytest
from attncmp.store.errors import AttncmpError, one_line
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store


def _attncmp_modules():
    torch_free = ("attncmp.store", "attncmp.analyze")
    names = ["attncmp.cli"]
    for pkg in ("store", "analyze", "extract"):
        mod = importlib.import_module(f"attncmp.{pkg}")
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, f"attncmp.{pkg}.")]
    for name in names:
        if name.startswith(torch_free) or importlib.util.find_spec("torch") is not None:
            yield importlib.import_module(name)


def test_every_public_exception_class_derives_from_attncmp_error():
    found = {}
    for mod in _attncmp_modules():
        for name, obj in vars(mod).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == mod.__name__
                and not name.startswith("_")
            ):
                found[f"{mod.__name__}.{name}"] = obj
    assert {"StoreError", "ExtractError", "ReferenceModelError", "AnalysisError"} <= {
        c.__name__ for c in found.values()
    }
    strays = [name for name, cls in found.items() if not issubclass(cls, AttncmpError)]
    assert not strays, f"exception classes outside the AttncmpError family: {strays}"


def test_input_errors_stay_value_errors_for_api_callers():
    from attncmp.analyze.errors import AnalysisInputError
    from attncmp.extract.reference.errors import CheckpointError, ReferenceInputError
    from attncmp.store.errors import StoreInputError

    for cls in (AnalysisInputError, StoreInputError, CheckpointError, ReferenceInputError):
        assert issubclass(cls, AttncmpError) and issubclass(cls, ValueError)


def test_one_line():
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(KeyError("mae")) == "mae"
    assert one_line(RuntimeError("")) == "RuntimeError"
    assert one_line(OSError("\x1b[31mred\x1b[0m x"), with_type=True) == "OSError: red x"
    assert one_line(ValueError("x" * 50), limit=10) == "xxxxxxx..."


def _cli(*args, code: str | None = None):
    """The real entry point in a fresh interpreter (``code`` runs first, e.g. to plant a bug)."""
    prog = (code or "") + "\nimport sys\nfrom attncmp.cli import main\nmain(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", prog, *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("err") / "s.h5", synthetic_spec(4))


def test_user_error_is_one_line_and_nonzero(store, tmp_path):
    r = _cli("plot", "heatmap", store, "--id", "nope", "--out", tmp_path / "h.png")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no committed sample with id 'nope'" in lines[0], r.stderr
    assert lines[0].startswith("Error: ")
    # a figure path the user cannot write (its "directory" is a file): one line naming it, not
    # an OSError traceback
    (tmp_path / "afile").write_text("x")
    r = _cli("plot", "heatmap", store, "--id", "s0000", "--out", tmp_path / "afile" / "h.png")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot create its directory" in r.stderr and "h.png" in r.stderr


def test_click_usage_error_is_one_line():
    r = _cli("analyze", "/no/such/store.h5", "--save-dir", "x")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "does not exist" in r.stderr


def test_internal_error_shows_traceback_and_asks_for_a_report(store):
    bug = (
        "import attncmp.store.info as info\n"
        "def store_info(paths):\n"
        "    return {}['mae']\n"
        "info.store_info = store_info\n"
    )
    r = _cli("store", "info", store, code=bug)
    assert r.returncode == 70, r.stderr
    assert "Traceback (most recent call last)" in r.stderr
    assert "KeyError: 'mae'" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "internal error (KeyError: mae)" in last and "bug" in last and "report" in last


def test_a_plain_value_error_is_a_bug_not_a_user_error(store):
    # before: cli.py showed every ValueError/KeyError as "Error: ..." and hid the bug
    bug = (
        "import attncmp.store.info as info\n"
        "def store_info(paths):\n"
        "    raise ValueError('operands could not be broadcast')\n"
        "info.store_info = store_info\n"
    )
    r = _cli("store", "info", store, code=bug)
    assert r.returncode == 70 and "Traceback" in r.stderr, r.stderr


def test_the_package_defines_one_root():
    assert attncmp.store.errors.AttncmpError is AttncmpError
    assert AttncmpError.__mro__[1] is Exception


def test_a_figure_that_cannot_be_written_names_its_path(tmp_path):
    from attncmp.analyze.errors import AnalysisError
    from attncmp.analyze.plotstyle import write_figure
    from matplotlib.figure import Figure

    with pytest.raises(AnalysisError, match=r"missing.*h\.png: cannot write the figure"):
        write_figure(Figure(), tmp_path / "missing" / "h.png")
