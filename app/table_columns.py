"""Which of a table's columns to show, and in what order: the chosen order, without a column no row fills (a sweep
without labels has no accuracy; History's runs of a detector have no top-1 agreement). Pure: a DataFrame in."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

__all__ = ["filled_columns"]


def filled_columns(table: pd.DataFrame, order: Iterable[str], always: Iterable[str] = ()) -> list[str]:
    """`order`'s columns that `table` has and some row fills (not NaN, not ""), and the `always` ones whatever they hold."""
    keep = set(always)
    return [c for c in order if c in table and (c in keep or (table[c].notna() & (table[c] != "")).any())]
