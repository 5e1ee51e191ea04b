"""Values as JSON holds them: numpy scalars as Python numbers, NaN as null, days as ISO text."""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def day_text(value: Any) -> str:
    """A timestamp at midnight as `YYYY-MM-DD`, any other value as its text."""
    if isinstance(value, pd.Timestamp | datetime) and value == pd.Timestamp(value).normalize():
        return pd.Timestamp(value).date().isoformat()
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def jsonable(value: Any) -> Any:
    """A deep copy of `value` that `json.dumps` accepts, losing nothing it can keep."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray | pd.Index):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, pd.Series):
        return {day_text(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, date | datetime | pd.Timestamp):
        return day_text(value)
    if isinstance(value, Path):
        return str(value)
    return value
