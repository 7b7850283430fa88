"""The prebuilt compact encoder writes exactly what ``json.dumps`` writes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.canonical import compact

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
WITH_DECIMALS = st.recursive(
    SCALARS | st.decimals(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

PLAIN = compact()
SORTED = compact(sort_keys=True, default=str)


@given(VALUES)
def test_compact_writes_what_json_dumps_writes(value: Any) -> None:
    assert PLAIN(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=True)


@given(WITH_DECIMALS)
def test_sorted_with_a_default_writes_what_json_dumps_writes(value: Any) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    assert SORTED(value) == expected


def test_the_canonical_forms_are_the_ones_stored() -> None:
    # An entry's canonical bytes and a request's fingerprint input, as sealed and stored.
    assert PLAIN(["entry/v1", 7, "é", [[1, 2, -3]], []]) == '["entry/v1",7,"\\u00e9",[[1,2,-3]],[]]'
    assert SORTED(["earn", {"points": Decimal("1.50"), "currency": "A"}]) == (
        '["earn",{"currency":"A","points":"1.50"}]'
    )
