"""Saving fits to a portable JSON file and loading them back, without pickle.

Arrays are stored as little-endian bytes in base64 with their dtype and shape (exact, and
readable from any language); nested jaxlmm records (`InferenceTable`, `CVCurve`, λ paths) by
their field names; a formula fit's design by its formula and the fitted rows of the variables
it reads (column by column, exactly), from which formulaic's state is made again. Loading only
ever constructs jaxlmm's own record classes, named in the file and looked up in jaxlmm's
modules; nothing in the file is executed."""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import math
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from ._solution import RESULTS

FORMAT = "jaxlmm-fit/1"


def save_fit(fit, path) -> Path:
    """Write `fit` (any jaxlmm `Fit`) to `path` as JSON; returns the path. Every field is kept, so
    `load_fit(path)` gives equal coefficients, variance components, BLUPs, tables and
    `predict` (for a formula fit, on a DataFrame too: the file then holds the fitted rows of the
    formula's variables)."""
    from ._fit import Fit

    if not isinstance(fit, Fit):
        raise ValueError(f"`fit` must be a jaxlmm fit; got {type(fit).__name__}.")
    document = {"format": FORMAT, "fit": _encode(fit)}
    path = Path(path)
    path.write_text(json.dumps(document, allow_nan=False))
    return path


def load_fit(path):
    """Read a fit written by `save_fit` (or `Fit.save`). Raises `ValueError` for a file that is not
    one (wrong format tag, unknown record class)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"`path` {str(path)!r} is not a readable jaxlmm fit file: {error}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"`path` {str(path)!r} is not a jaxlmm fit file (format {FORMAT!r}).")
    return _decode(document["fit"])


def _encode(value):
    from ._formula import FormulaDesign

    if value is None or isinstance(value, bool | str | int) and not isinstance(value, np.generic):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic):
        return _encode(value.item())
    if isinstance(value, jax.Array):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            data = np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
            return {"__array__": {"dtype": data.dtype.str, "shape": list(value.shape),
                                  "base64": base64.b64encode(data.tobytes()).decode("ascii")}}
        return {"__list_array__": _encode(value.tolist())}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, RESULTS):
        return {"__results__": _encode(np.asarray(value._value))}
    if isinstance(value, FormulaDesign):
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)
                  if f.name not in ("fixed_spec", "random_spec", "template")}
        return {"__design__": fields, "template": _encode_frame(value.template)}
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("jaxlmm."):
        cls = type(value)
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__record__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    raise ValueError(f"cannot save a value of type {type(value).__name__} in a fit file.")


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__float__" in value:
        return float(value["__float__"])
    if "__array__" in value:
        spec = value["__array__"]
        data = base64.b64decode(spec["base64"])
        return np.frombuffer(data, np.dtype(spec["dtype"])).reshape(spec["shape"]).copy()
    if "__list_array__" in value:
        return np.asarray(_decode(value["__list_array__"]))
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    if "__results__" in value:
        return eqx.tree_at(lambda r: r._value, RESULTS.successful, _decode(value["__results__"]))
    if "__design__" in value:
        from ._formula import FormulaDesign

        template = _decode_frame(value["template"])
        return FormulaDesign.rebuild(template, **{k: _decode(v) for k, v in value["__design__"].items()})
    if "__record__" in value:
        cls = _record_class(value["__record__"])
        record = object.__new__(cls)
        for name, field in value["fields"].items():
            object.__setattr__(record, name, _decode(field))
        return record
    raise ValueError(f"unknown entry in a fit file: keys {sorted(value)[:5]}.")


def _record_class(name: str):
    """The jaxlmm record class `module:qualname`, refusing anything outside jaxlmm."""
    module_name, _, qualname = name.partition(":")
    if module_name != "jaxlmm" and not module_name.startswith("jaxlmm."):
        raise ValueError(f"a fit file may only name jaxlmm's own records; it names {name!r}.")
    cls = importlib.import_module(module_name)
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"a fit file names {name!r}, which is not a jaxlmm record.")
    return cls


def _encode_frame(frame) -> dict:
    """A DataFrame column by column: numbers and booleans as exact arrays, categoricals as their
    categories (in order: formulaic's levels) and codes, anything else as a list of values."""
    import pandas as pd

    columns = []
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            entry = {"categories": _encode(list(column.cat.categories)), "ordered": bool(column.cat.ordered),
                     "codes": _encode(column.cat.codes.to_numpy())}
        elif pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            entry = {"values": _encode(column.to_numpy())}
        else:
            entry = {"values": _encode([_plain(v) for v in column.tolist()])}
        columns.append([str(name), entry])
    return {"columns": columns}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _decode_frame(document):
    import pandas as pd

    data = {}
    for name, entry in document["columns"]:
        if "categories" in entry:
            data[name] = pd.Categorical.from_codes(_decode(entry["codes"]), _decode(entry["categories"]),
                                                   ordered=entry["ordered"])
        else:
            data[name] = _decode(entry["values"])
    return pd.DataFrame(data)
