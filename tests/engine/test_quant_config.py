"""Run settings: how a fallback set is written and read."""

from __future__ import annotations


def test_fallback_lists_read_in_name_order():
    """ShuffleNet trial: 'n0, n10, n12, n17, n23, n25, n35, n37, n4' on the Rebuild page, in the report and the command."""
    from engine import QuantConfig, in_name_order

    assert in_name_order(["n4", "n10", "n0", "n134", "Conv.12", "Conv.5"]) == ["Conv.5", "Conv.12", "n0", "n4", "n10", "n134"]
    assert QuantConfig(fallback=frozenset({"n37", "n4", "n12"})).to_dict()["fallback"] == ["n4", "n12", "n37"]
