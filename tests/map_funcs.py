"""Functions for ``icechunk-dist map --func map_funcs:NAME`` in tests/test_map.py."""

from __future__ import annotations

from typing import Any

import numpy as np

not_a_function = 42


def to_celsius(ds: Any) -> Any:
    """Temperature in degrees Celsius (lazy), packed as before; the rest unchanged."""
    out = ds.copy()
    out["temp"] = (ds["temp"] - 273.15).assign_attrs(units="degC",
                                                     long_name="air temperature")
    out["temp"].encoding = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 0.0,
                            "_FillValue": np.int16(-32767)}
    out.attrs["history"] = "converted to Celsius by icechunk-dist map"
    return out


def returns_list(ds: Any) -> Any:
    return [ds]


def raises(ds: Any) -> Any:
    raise RuntimeError("this job is broken")


def _fail_block(block: np.ndarray) -> np.ndarray:
    raise RuntimeError("failed on a worker")


def fails_on_workers(ds: Any) -> Any:
    """Lazy until computed: the failure happens while the result is written."""
    out = ds.copy()
    data = ds["precip"].data.map_blocks(_fail_block, dtype=ds["precip"].dtype)
    out["precip"] = ds["precip"].copy(data=data)
    return out
