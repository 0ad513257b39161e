"""Saving fits to a portable JSON file and loading them back, without pickle and without
evaluating anything from the file.

The file holds one fit record and a SHA-256 digest of it. Arrays are little-endian bytes in
base64 with their dtype and shape (exact, readable from any language); records are named from a
closed list (`RECORDS`, names that do not depend on where a class lives); a formula fit keeps
its design as column recipes in a closed vocabulary (`jaxlmm._recipes`), never as formula text
to parse. Loading checks the digest (an edited or damaged file), the size and nesting, then every
field's type, shape, dtype and range against the record's own field annotations, and the fit's
consistency (p, q and n agree across fields; a successful fit is finite). Anything else is one
`ValueError` that names the file and the field."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from ._fit import SAVABLE, Fit, savable
from ._formula import FormulaDesign
from ._inference import InferenceTable
from ._path import LassoPath
from ._recipes import TRANSFORMS, DesignFactor
from ._solution import RESULT_NAMES, RESULTS, result_index, results_from_index
from .losses.mixed_model import MixedModelParams

FORMAT = "jaxlmm-fit/3"
# Formats this version still reads, each with the step that brings its payload to the next one.
MIGRATIONS = {"jaxlmm-fit/2": "jaxlmm-fit/3"}
for _record_type in (InferenceTable, LassoPath, MixedModelParams, FormulaDesign, DesignFactor):
    savable(_record_type)
# Every record type: these, each `Fit` subclass and the estimators' `@savable` records (registered when
# `jaxlmm.estimators` is imported, as `jaxlmm.load_fit` does).
RECORDS = SAVABLE
# Fields annotated `object` hold these records; FormulaDesign's formulaic specs are not saved.
OBJECT_FIELDS = {"inference": "InferenceTable", "design": "FormulaDesign"}
UNSAVED = {"FormulaDesign": ("fixed_spec", "random_spec")}
MAX_BYTES = 1 << 30
MAX_DEPTH = 16
MAX_ELEMENTS = 1 << 28
DTYPES = {"|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f4", "<f8"}


def _is_fit_record(name: str) -> bool:
    return name in RECORDS and issubclass(RECORDS[name], Fit)


class _Invalid(Exception):
    """A field that does not fit the schema (becomes the one ValueError of `load_fit`)."""


# ---- writing ------------------------------------------------------------------------------------


def save_fit(fit, path) -> Path:
    """Write `fit` (any jaxlmm `Fit`) to `path` as JSON; returns the path. Every field is kept, so
    `load_fit(path)` gives equal coefficients, variance components, BLUPs, tables and `predict`
    (for a formula fit, on a DataFrame too when its formula is in the recipe vocabulary; the
    fitting rows are not stored). A `ValueError` for a path that cannot be written."""
    if not isinstance(fit, Fit) or not _is_fit_record(type(fit).__name__):
        raise ValueError(f"`fit` must be a jaxlmm fit; got {type(fit).__name__}.")
    payload = _encode(fit)
    document = {"format": FORMAT, "digest": _digest(payload), "fit": payload}
    path = Path(path)
    try:
        path.write_text(json.dumps(document, allow_nan=False))
    except OSError as error:
        raise ValueError(f"`path` {str(path)!r} cannot be written: {error.strerror or error}.") from None
    return path


def _digest(payload) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _encode(value):
    if value is None or isinstance(value, bool | str) or (isinstance(value, int) and not isinstance(value, np.generic)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, np.generic):
        return _encode(value.item())
    if isinstance(value, jax.Array):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"cannot save an array of dtype {value.dtype} in a fit file.")
        data = np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
        return {"array": {"dtype": data.dtype.str, "shape": list(value.shape),
                          "base64": base64.b64encode(data.tobytes()).decode("ascii")}}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, RESULTS):
        return {"results": _encode(np.asarray(result_index(value)))}
    name = type(value).__name__
    if RECORDS.get(name) is type(value):
        skip = UNSAVED.get(name, ())
        return {"record": name, "fields": {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)
                                           if f.name not in skip}}
    raise ValueError(f"cannot save a value of type {name} in a fit file.")


# ---- reading ------------------------------------------------------------------------------------


def load_fit(path):
    """Read a fit written by `save_fit` (or `Fit.save`). Nothing in the file is executed or
    imported: only the records of `RECORDS` are built, each field checked against its type,
    shape and range. Raises one `ValueError` naming the file (and the field) for anything that is
    not such a fit: another format, a file edited after saving (the digest), a malformed or
    inconsistent field."""
    path = Path(path)
    where = f"`path` {str(path)!r}"
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ValueError(f"{where} is {size} bytes, more than a fit file's {MAX_BYTES}.")
        text = path.read_bytes().decode("utf-8")
        document = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"{where} is not a readable jaxlmm fit file: {type(error).__name__}: {error}"[:500]) from None
    version = document.get("format") if isinstance(document, dict) else None
    if version not in (FORMAT, *MIGRATIONS):
        older = version == "jaxlmm-fit/1"
        raise ValueError(f"{where} is not a jaxlmm fit file (format {FORMAT!r})"
                         + ("; it was written by an earlier jaxlmm, whose formula fits loading would have to "
                            "evaluate: refit and save again." if older else "."))
    if set(document) != {"format", "digest", "fit"}:
        raise ValueError(f"{where}: unexpected entries {sorted(map(str, document))[:5]} in a fit file.")
    try:
        if not isinstance(document["digest"], str) or document["digest"] != _digest(document["fit"]):
            raise _Invalid("the digest does not match the content: the file was changed after it was saved")
        payload = document["fit"]
        while version != FORMAT:
            payload, version = _migrate_2_to_3(payload, "fit", 0), MIGRATIONS[version]
        fit = _record(payload, "fit", allowed={n: c for n, c in RECORDS.items() if _is_fit_record(n)},
                      depth=0)
        _check_fit(fit)
    except _Invalid as error:
        raise ValueError(f"{where} is not a valid jaxlmm fit: {error}"[:1000]) from None
    except (ValueError, TypeError) as error:  # a record's own constructor refusing a value
        raise ValueError(f"{where} is not a valid jaxlmm fit: {error}"[:1000]) from None
    return fit


def _migrate_2_to_3(raw, where: str, depth: int):
    """A format-2 payload in format 3: outcomes travel by result codes only. Fits lose `converged`
    (now `result == "successful"`) and the EB ridge fit its `message`; an lmmLasso fit gains
    `penalty_name` (None: the ℓ1), CV records their `result` codes (None: format 2 kept none); an inference table's
    per-row `valid` becomes per-row result codes (`nonfinite` where a row was invalid: it holds
    NaN, and format 2 did not say why)."""
    if depth > MAX_DEPTH:
        raise _Invalid(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(raw, list):
        return [_migrate_2_to_3(v, where, depth + 1) for v in raw]
    if not isinstance(raw, dict):
        return raw
    if set(raw) == {"record", "fields"} and isinstance(raw["fields"], dict):
        name, fields = raw["record"], dict(raw["fields"])
        if isinstance(name, str) and _is_fit_record(name):
            fields.pop("converged", None)
            if name == "EBRidgeFit":
                fields.pop("message", None)
            if name == "LMMLassoFit":
                fields.setdefault("penalty_name", None)  # format 3 names a user's penalty
            if name == "SHELFit":
                fields.setdefault("cv_result", None)  # format 3 records the CV's result codes
        if name == "CVCurve":
            fields.setdefault("result", None)
        if name == "InferenceTable" and "valid" in fields:
            valid = _array(fields.pop("valid"), f"{where}.valid")
            codes = np.where(valid.astype(bool), int(result_index(RESULTS.successful)),
                             int(result_index(RESULTS.nonfinite))).astype(np.int32)
            fields["result"] = {"results": _encode(codes)}
        return {"record": name, "fields": {k: _migrate_2_to_3(v, f"{where}.{k}", depth + 1)
                                           for k, v in fields.items()}}
    return {k: _migrate_2_to_3(v, where, depth + 1) for k, v in raw.items()}


def _record(raw, where: str, allowed: dict, depth: int):
    if depth > MAX_DEPTH:
        raise _Invalid(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(raw, dict) or set(raw) != {"record", "fields"} or not isinstance(raw["fields"], dict):
        raise _Invalid(f"{where}: expected a record {{'record': name, 'fields': {{...}}}}")
    name = raw["record"]
    if not isinstance(name, str) or name not in allowed:
        raise _Invalid(f"{where}: a record of type {str(name)[:60]!r} is not allowed here (expected one of "
                       f"{sorted(allowed)})")
    cls = allowed[name]
    skip = UNSAVED.get(name, ())
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    expected, given = {f.name for f in fields}, set(raw["fields"])
    if given != expected:
        raise _Invalid(f"{where} ({name}): fields {sorted(given ^ expected)[:5]} are missing or unexpected")
    values = {f.name: _value(raw["fields"][f.name], f"{where}.{f.name}", _annotation(name, f), depth + 1)
              for f in fields}
    _check_record(name, values, where)
    if issubclass(cls, eqx.Module):
        record = object.__new__(cls)  # equinox modules: set the checked fields as their __init__ would
        for key, value in values.items():
            object.__setattr__(record, key, value)
        return record
    return cls(**values)


def _annotation(record: str, field) -> str:
    annotation = str(field.type)
    if annotation.startswith("object"):
        return annotation.replace("object", OBJECT_FIELDS.get(field.name, "object"), 1)
    return annotation


def _value(raw, where: str, annotation: str, depth: int):
    options = [option.strip() for option in annotation.split("|")]
    if "None" in options and raw is None:
        return None
    failures = []
    for option in options:
        if option == "None":
            continue
        try:
            return _typed(raw, where, option, depth)
        except _Invalid as error:
            failures.append(str(error))
    raise _Invalid(failures[0] if len(failures) == 1 else f"{where}: expected {annotation}")


def _typed(raw, where: str, kind: str, depth: int):
    if kind in ("np.ndarray", "Array"):
        return _array(raw, where)
    if kind == "float":
        return _float(raw, where)
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _Invalid(f"{where}: expected an integer, got {_kind(raw)}")
        return raw
    if kind == "bool":
        if not isinstance(raw, bool):
            raise _Invalid(f"{where}: expected true or false, got {_kind(raw)}")
        return raw
    if kind == "str":
        if not isinstance(raw, str) or len(raw) > 100_000:
            raise _Invalid(f"{where}: expected a text, got {_kind(raw)}")
        return raw
    if kind == "tuple[int, int]":
        value = _container(raw, where, depth)
        if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                     for v in value)):
            raise _Invalid(f"{where}: expected a pair of integers")
        return value
    if kind in ("tuple", "dict"):
        value = _container(raw, where, depth)
        if not isinstance(value, tuple if kind == "tuple" else dict):
            raise _Invalid(f"{where}: expected a {kind}, got {_kind(raw)}")
        return value
    if kind == "RESULTS":
        if not isinstance(raw, dict) or set(raw) != {"results"}:
            raise _Invalid(f"{where}: expected result codes")
        codes = _array(raw["results"], where)
        if codes.dtype.kind not in "iu" or np.any((codes < 0) | (codes >= len(RESULT_NAMES))):
            raise _Invalid(f"{where}: result codes must be integers in [0, {len(RESULT_NAMES)})")
        return results_from_index(codes)
    if kind in RECORDS:
        return _record(raw, where, {kind: RECORDS[kind]}, depth)
    raise _Invalid(f"{where}: no schema for {kind!r}")


def _container(raw, where: str, depth: int):
    """Tuples and dicts of plain values, arrays, containers and design factors (labels,
    names, recipes, criteria tables)."""
    if depth > MAX_DEPTH:
        raise _Invalid(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if raw is None or isinstance(raw, bool | int | str):
        return raw
    if isinstance(raw, float):
        return _float(raw, where)
    if not isinstance(raw, dict) or len(raw) not in (1, 2):
        raise _Invalid(f"{where}: expected a value, got {_kind(raw)}")
    if set(raw) == {"float"}:
        return _float(raw, where)
    if set(raw) == {"array"}:
        return _array(raw, where)
    if set(raw) == {"tuple"} and isinstance(raw["tuple"], list):
        return tuple(_container(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(raw["tuple"]))
    if set(raw) == {"dict"} and isinstance(raw["dict"], list):
        items = {}
        for i, item in enumerate(raw["dict"]):
            if not (isinstance(item, list) and len(item) == 2):
                raise _Invalid(f"{where}[{i}]: expected a [key, value] pair")
            key = _container(item[0], f"{where}[{i}].key", depth + 1)
            if not isinstance(key, str | int | float | bool | tuple) or isinstance(key, tuple) and not _plain(key):
                raise _Invalid(f"{where}[{i}]: a key must be a number, a text or a tuple of them")
            items[key] = _container(item[1], f"{where}[{key!r}]", depth + 1)
        return items
    if set(raw) == {"record", "fields"}:
        return _record(raw, where, {"DesignFactor": DesignFactor}, depth + 1)
    raise _Invalid(f"{where}: expected a value, got an object with keys {sorted(map(str, raw))[:4]}")


def _plain(value) -> bool:
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def _float(raw, where: str) -> float:
    if isinstance(raw, dict) and set(raw) == {"float"} and raw["float"] in ("nan", "inf", "-inf"):
        return float(raw["float"])
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _Invalid(f"{where}: expected a number, got {_kind(raw)}")
    value = float(raw)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise _Invalid(f"{where}: a number must be finite (non-finite ones are written as {{'float': 'inf'}})")
    return value


def _array(raw, where: str) -> np.ndarray:
    if not (isinstance(raw, dict) and set(raw) == {"array"} and isinstance(raw["array"], dict)
            and set(raw["array"]) == {"dtype", "shape", "base64"}):
        raise _Invalid(f"{where}: expected an array {{'array': {{'dtype', 'shape', 'base64'}}}}")
    spec = raw["array"]
    if spec["dtype"] not in DTYPES:
        raise _Invalid(f"{where}: array dtype {str(spec['dtype'])[:20]!r} is not one of {sorted(DTYPES)}")
    shape = spec["shape"]
    if not (isinstance(shape, list) and len(shape) <= 4
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise _Invalid(f"{where}: array shape must be a list of at most 4 sizes ≥ 0")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise _Invalid(f"{where}: {count} array elements is more than a fit file holds")
    if not isinstance(spec["base64"], str):
        raise _Invalid(f"{where}: array data must be base64 text")
    dtype = np.dtype(spec["dtype"])
    try:
        data = base64.b64decode(spec["base64"], validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(f"{where}: array data is not valid base64") from None
    if len(data) != count * dtype.itemsize:
        raise _Invalid(f"{where}: array data holds {len(data)} bytes, not the {count * dtype.itemsize} of "
                       f"shape {shape}")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _kind(raw) -> str:
    return "null" if raw is None else type(raw).__name__


# ---- ranges and consistency ---------------------------------------------------------------------


def _check_record(name: str, values: dict, where: str) -> None:
    if name == "DesignFactor":
        transform, constants, level = values["transform"], values["constants"], values["level"]
        counts = {"center": 1, "scale": 2, "power": 1}
        if transform not in TRANSFORMS or len(constants) != counts.get(transform, 0):
            raise _Invalid(f"{where}: transform {transform[:30]!r} with {len(constants)} constants is not in the "
                           f"vocabulary {sorted(TRANSFORMS)}")
        if not all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in constants):
            raise _Invalid(f"{where}: constants must be finite numbers")
        if (transform == "scale" and not constants[1] > 0) or (transform == "power" and not (
                isinstance(constants[0], int) and 0 <= constants[0] <= 16)):
            raise _Invalid(f"{where}: constants {constants} out of range for {transform!r}")
        if level is not None and transform != "identity":
            raise _Invalid(f"{where}: a level indicator takes no transform")
    elif name == "FormulaDesign":
        if values["structure"] not in ("full", "diagonal", "identity"):
            raise _Invalid(f"{where}.structure: {values['structure'][:30]!r} is not a covariance structure")
        for field in ("group", "columns", "feature_names", "random_names"):
            if not all(isinstance(v, str) for v in values[field]):
                raise _Invalid(f"{where}.{field}: expected a tuple of texts")
        for field, count in (("fixed_recipes", len(values["feature_names"]) - len(values["columns"])),
                             ("random_recipes", len(values["random_names"]))):
            recipes = values[field]
            if recipes is not None and not (len(recipes) == count and all(
                    isinstance(r, tuple) and all(isinstance(f, DesignFactor) for f in r) for r in recipes)):
                raise _Invalid(f"{where}.{field}: expected {count} recipes (tuples of DesignFactor records)")
        if not all(isinstance(k, str) and isinstance(v, tuple) and all(isinstance(x, str) for x in v)
                   for k, v in values["levels"].items()):
            raise _Invalid(f"{where}.levels: expected texts mapped to tuples of texts")
        if values["n_dropped"] < 0:
            raise _Invalid(f"{where}.n_dropped: must be ≥ 0")
    elif name == "InferenceTable":
        k = np.shape(values["coords"])
        if len(k) != 1 or values["coords"].dtype.kind not in "iu":
            raise _Invalid(f"{where}.coords: expected a 1-D integer array")
        for field in ("estimate", "std_error", "ci_low", "ci_high", "p_value", "result"):
            if np.shape(result_index(values[field]) if field == "result" else values[field]) != k:
                raise _Invalid(f"{where}.{field}: expected shape {k}, like coords")
        if not 0 < values["level"] < 1:
            raise _Invalid(f"{where}.level: must be in (0, 1)")


def _check_fit(fit) -> None:
    """The shapes that predict, summary and the post-fit functions rely on, and finite values in a
    successful fit."""
    def bad(field, what):
        raise _Invalid(f"fit.{field}: {what}")

    coef = fit.coef
    if coef.dtype.kind != "f" or coef.ndim not in (1, 2):
        bad("coef", "expected a float array of p (or n_λ × p) coefficients")
    p = coef.shape[-1]
    if len(fit.feature_names) != p or not all(isinstance(n, str) for n in fit.feature_names):
        bad("feature_names", f"expected {p} names, one per coefficient")
    support = fit.support
    if support.ndim != 1 or (support.size and (support.dtype.kind not in "iu" or support.min() < 0
                                               or support.max() >= p)):
        bad("support", f"expected column indices in [0, {p})")
    if fit.result not in RESULT_NAMES:
        bad("result", f"{fit.result[:40]!r} is not one of {list(RESULT_NAMES)}")
    if fit.n_obs < 1 or fit.n_clusters < 1 or fit.n_iter < 0:
        bad("n_obs", "counts must be positive")
    if len(fit.groups) != fit.n_clusters:
        bad("groups", f"expected {fit.n_clusters} labels, one per cluster")
    if not all(_plain(g) for g in fit.groups):
        bad("groups", "labels must be numbers or texts")
    if fit.psi is not None and (fit.psi.ndim != 2 or fit.psi.shape[0] != fit.psi.shape[1] or fit.psi.dtype.kind != "f"):
        bad("psi", "expected a square float array")
    q = fit.psi.shape[0] if fit.psi is not None else None
    if fit.ranef is not None and not (fit.ranef.ndim == 2 and fit.ranef.shape[0] == fit.n_clusters
                                      and fit.ranef.shape[1] == (q or fit.ranef.shape[1])):
        bad("ranef", f"expected shape ({fit.n_clusters}, q) with q = {q or 'its columns'}")
    if fit.sigma2 is not None and not (fit.sigma2 >= 0 or math.isnan(fit.sigma2)):
        bad("sigma2", "a variance must be ≥ 0")
    if fit.data_fingerprint is not None and not (len(fit.data_fingerprint) == 32
                                                 and all(c in "0123456789abcdef" for c in fit.data_fingerprint)):
        bad("data_fingerprint", "expected 32 hexadecimal digits")
    if fit.design is not None and tuple(fit.design.feature_names) != tuple(fit.feature_names):
        bad("design", "its column names differ from the fit's")
    if fit.inference is not None and fit.inference.coords.size and (
            fit.inference.coords.min() < -1 or fit.inference.coords.max() >= p):
        bad("inference.coords", f"expected columns in [-1, {p})")
    if fit.result == "successful":
        numbers = [coef, np.asarray(fit.intercept, float)] + [np.asarray(v, float) for v in (fit.sigma2, fit.psi,
                                                                                            fit.ranef) if v is not None]
        if not all(np.all(np.isfinite(v)) for v in numbers):
            bad("result", "'successful' with non-finite estimates")
