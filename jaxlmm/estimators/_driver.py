"""What every `fit_*` does around its method: the fitting scale and back, the caller's data
identity on the fit, and `throw`.

An estimator takes `frame(data)`, fits `frame.data` (y / s_y, X / s_x, powers of two: exact, so
data of unit scale give bit-identical results), builds its `Fit` on that scale and hands it to
`caller_fit`, which attaches the caller's names, labels and fingerprint and maps every field the
fit's class declares in `UNITS` back to the caller's scale (`on_caller_scale`); `finish` follows.
"""

from __future__ import annotations

import dataclasses

from .._data import LMMData
from .._fit import Fit, on_caller_scale
from .._scale import DataScale, data_scale, rescaled


@dataclasses.dataclass(frozen=True)
class Frame:
    """The caller's data as a method sees it.

    - `data`: on the fitting scale, with cluster labels 0..n−1 (labels never reach a compiled
      program).
    - `scale`: the `DataScale` (s_y, s_x); (1, 1) when the method fits on the caller's scale.
    - `identity`: the caller's `feature_names`, `groups`, `n_obs`, `n_clusters` and
      `data_fingerprint`, the fields every `Fit` records.
    """

    data: LMMData
    scale: DataScale
    identity: dict


def frame(data: LMMData, rescale: bool = True) -> Frame:
    """`data` on its fitting scale (`rescale=False`: the caller's, e.g. for a user's penalty whose
    parameters are in the units of β and y)."""
    scale = data_scale(data) if rescale else DataScale(1.0, 1.0)
    identity = {"feature_names": data.column_names(), "groups": data.labels, "n_obs": data.n_obs,
                "n_clusters": data.n_clusters, "data_fingerprint": data.fingerprint()}
    return Frame(rescaled(data, scale), scale, identity)


def caller_fit(fit_type: type[Fit], frame: Frame, factors: dict | None = None, **fields) -> Fit:
    """The `fit_type` made of `fields` (on the fitting scale) and the caller's identity, mapped to
    the caller's scale (`factors`: `on_caller_scale`'s overrides). The estimator returns it
    through `finish` (after any step that needs the caller's scale, such as variance components)."""
    return on_caller_scale(fit_type(**frame.identity, **fields), frame.scale, **(factors or {}))
