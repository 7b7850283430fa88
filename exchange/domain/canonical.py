"""Compact JSON text for digests and statement parameters, with the encoder built once.

``json.dumps`` with any option but the defaults builds a new encoder, and under it a new C
encoder, on every call: about half of what encoding a ledger entry's dozen fields costs.
:func:`compact` builds them once and gives the same text as
``json.dumps(value, separators=(",", ":"), sort_keys=..., default=...)``.

The encoder does not look for circular references (``check_circular=False``): what it is
given here is built from rows and plain dictionaries, never from itself.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any


def compact(
    *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> Callable[[Any], str]:
    """An encoder of compact, ASCII-only JSON text (``separators=(",", ":")``)."""
    encoder = json.JSONEncoder(
        separators=(",", ":"), sort_keys=sort_keys, default=default, check_circular=False
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return encoder.encode
    chunks = make(
        None,
        encoder.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        sort_keys,
        False,
        True,
    )

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode
