"""Bulk earns: up to :data:`MAX_ITEMS` awards of one merchant in one transaction.

Each item is an earn exactly as :func:`exchange.services.points.earn` makes it: same
idempotency key space (the merchant), same fingerprint (so a single earn replays a bulk
item and the other way round), same entry, postings, lot and refusals. Each item has its
own outcome: an entry id (new or replayed) or a typed refusal; one item's refusal does not
affect the others. Refusals that a single earn records under its key (unknown or inactive
currency, exposure limit) are recorded here too; refusals of malformed input (key, points,
unknown member) are not, as for a single earn.

The work is done in a handful of statements whatever the number of items:

1. members exist (one ``SELECT``), then claim every key with one multi-row
   ``INSERT … ON CONFLICT DO NOTHING RETURNING``, in key order (two bulk calls with
   overlapping keys wait for each other in one order, never in a cycle), and read the
   earlier outcome of the keys already taken (one ``SELECT``);
2. the currencies (one ``SELECT``), the exposure of issuers with a limit;
3. find the wallets and lock their rows in ascending account id (one statement); when one
   is missing, lock none there, create the missing ones (one statement, in ``(currency,
   member)`` order) and lock all of them in ascending account id
   (:func:`exchange.ledger.engine.lock_wallets`);
4. insert the entries (one statement), then their postings sorted by ``(account, stripe)``:
   every balance row this transaction updates is taken in that global order, which a
   single earn (one stripe per account, ascending account id) also follows, so bulk and
   single writers cannot deadlock; then the lots and, when an earn repays a points debt,
   its lot moves;
5. record the refusals on their claims (one ``UPDATE``).

The database triggers are the same as for any entry: postings move balances, every entry
must sum to zero at commit, wallets cannot go below zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange.domain import errors
from exchange.domain.canonical import compact
from exchange.domain.entries import Leg, imbalances, merge_legs
from exchange.domain.errors import Forbidden, Refusal
from exchange.domain.lots import credit_split
from exchange.domain.money import micro_to_decimal, rate_to_text
from exchange.ledger import engine, idempotency
from exchange.ledger.accounts import (
    Currency,
    currencies_by_code,
    issuer_liability_micro,
    settlement_account,
    settlement_asset,
)
from exchange.ledger.engine import Conn, UnbalancedEntry
from exchange.services import clock
from exchange.services.actors import Actor
from exchange.services.points import check_points_field
from exchange.services.tx import Pool, transaction

MAX_ITEMS = 1000
OPERATION = "earn"


_json = compact()
"""Rows for one statement as one JSON document.

PostgreSQL unpacks it with ``jsonb_array_elements`` in C; one JSON text is much cheaper
than having the driver adapt a dozen Python lists of a thousand elements. Columns of
integers (postings, lots, wallets, the entries' members) go as array literals
(:func:`_int_array`), which PostgreSQL reads in less than half the time of the same rows in
JSON; fingerprints go as one string of 32-byte digests."""


@dataclass(frozen=True)
class EarnItem:
    """One award: ``points`` (smallest units) of ``currency_code`` to a member."""

    member_id: int
    currency_code: str
    points: int
    idempotency_key: str
    details: Mapping[str, Any] | None = None
    """Extra request details kept on the entry (part of the fingerprint), e.g. a reason."""


@dataclass(frozen=True)
class EarnResult:
    """The outcome of one item: an entry (``replayed`` when it existed) or a refusal."""

    idempotency_key: str
    entry_id: int | None = None
    replayed: bool = False
    refusal: Refusal | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None and self.entry_id is not None


@dataclass
class _Item:
    index: int
    item: EarnItem
    digest: bytes
    request: dict[str, Any]


@dataclass(frozen=True)
class _Stored:
    """What a key holds after this call: its fingerprint and outcome."""

    operation: str
    digest: bytes
    entry_id: int | None
    refusal: Refusal | None


def _request(item: EarnItem) -> dict[str, Any]:
    extra = dict(item.details or {})
    return {
        "member": item.member_id,
        "currency": item.currency_code,
        "points": item.points,
        **extra,
    }


def _reused() -> Refusal:
    return Refusal(
        errors.IDEMPOTENCY_KEY_REUSED,
        "this idempotencyKey was already used for a different request",
        "idempotencyKey",
    )


async def earn_many(pool: Pool, actor: Actor, items: Sequence[EarnItem]) -> list[EarnResult]:
    """Merchant ``actor`` awards every item; one result per item, in the items' order.

    Raises :class:`Forbidden` for a caller that is not a merchant and a
    :class:`Refusal` (``INVALID_INPUT``) for more than :data:`MAX_ITEMS` items.
    """
    if not actor.is_merchant:
        raise Forbidden("only a merchant awards points")
    if len(items) > MAX_ITEMS:
        raise Refusal("INVALID_INPUT", f"at most {MAX_ITEMS} items per call", "items")
    merchant_id = actor.merchant_id
    assert merchant_id is not None
    initiator = actor.initiator
    results: list[EarnResult | None] = [None] * len(items)
    candidates: list[_Item] = []
    for index, item in enumerate(items):
        try:
            idempotency.check_key(item.idempotency_key)
            check_points_field(item.points)
        except Refusal as refusal:
            results[index] = EarnResult(item.idempotency_key, refusal=refusal)
            continue
        request = _request(item)
        digest = idempotency.fingerprint(OPERATION, request)
        candidates.append(_Item(index, item, digest, request))
    if not candidates:
        return [r for r in results if r is not None]

    async def work(conn: Conn) -> dict[int, EarnResult]:
        return await _earn_all(conn, merchant_id, initiator, candidates)

    done = await transaction(pool, work)
    for index, result in done.items():
        results[index] = result
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


async def _earn_all(
    conn: Conn, merchant_id: int, initiator: str, candidates: list[_Item]
) -> dict[int, EarnResult]:
    out: dict[int, EarnResult] = {}
    now = clock.now()

    # 1. members, claims, earlier outcomes
    member_ids = sorted({c.item.member_id for c in candidates})
    cur = await conn.execute(
        "SELECT id FROM members"
        " WHERE id IN (SELECT x::bigint FROM jsonb_array_elements_text(%s::jsonb) AS x)",
        (_json(member_ids),),
    )
    known = {int(r[0]) for r in await cur.fetchall()}
    leaders: dict[str, _Item] = {}
    followers: list[_Item] = []
    for c in candidates:
        if c.item.member_id not in known:
            out[c.index] = EarnResult(
                c.item.idempotency_key, refusal=Refusal("NOT_FOUND", "member not found", "member")
            )
        elif c.item.idempotency_key in leaders:
            followers.append(c)
        else:
            leaders[c.item.idempotency_key] = c
    stored: dict[str, _Stored] = {}
    if not leaders:
        return out
    keys = sorted(leaders)
    cur = await conn.execute(
        "INSERT INTO requests (initiator, idempotency_key, operation, fingerprint)"
        " SELECT %s, x.key, %s, substring(%s::bytea FROM (x.ord * 32 - 31)::int FOR 32)"
        "   FROM jsonb_array_elements_text(%s::jsonb) WITH ORDINALITY AS x(key, ord)"
        "  ORDER BY x.ord"
        " ON CONFLICT DO NOTHING RETURNING idempotency_key",
        (initiator, OPERATION, b"".join(leaders[k].digest for k in keys), _json(keys)),
    )
    claimed = {str(r[0]) for r in await cur.fetchall()}
    taken = [k for k in keys if k not in claimed]
    if taken:
        cur = await conn.execute(
            "SELECT r.idempotency_key, r.operation, r.fingerprint, r.refusal_code,"
            "       r.refusal_field, r.refusal_message, e.id"
            "  FROM requests r LEFT JOIN entries e"
            "    ON e.initiator = r.initiator AND e.idempotency_key = r.idempotency_key"
            " WHERE r.initiator = %s"
            "   AND r.idempotency_key IN (SELECT jsonb_array_elements_text(%s::jsonb))",
            (initiator, _json(taken)),
        )
        for key, operation, fp, code, field, message, entry_id in await cur.fetchall():
            refusal = None if code is None else Refusal(code, message, field)
            stored[str(key)] = _Stored(
                str(operation),
                bytes(fp),
                None if entry_id is None else int(entry_id),
                refusal,
            )
        for key in taken:
            prior = stored.get(key)
            assert prior is not None, "a conflicting claim must be visible once it committed"
            leader = leaders[key]
            if prior.operation != OPERATION or prior.digest != leader.digest:
                out[leader.index] = EarnResult(key, refusal=_reused())
            else:
                out[leader.index] = EarnResult(
                    key, entry_id=prior.entry_id, replayed=True, refusal=prior.refusal
                )

    # 2. currencies and exposure limits
    mine = [leaders[k] for k in keys if k in claimed]
    mine.sort(key=lambda c: c.index)
    codes = sorted({c.item.currency_code for c in mine})
    currencies = await currencies_by_code(conn, codes, now) if codes else {}
    liability: dict[int, int] = {}
    refused: list[tuple[_Item, Refusal]] = []
    accepted: list[tuple[_Item, Currency, int]] = []
    for c in mine:
        currency = currencies.get(c.item.currency_code)
        try:
            if currency is None:
                raise Refusal(
                    errors.UNKNOWN_CURRENCY, f"no currency {c.item.currency_code!r}", "currency"
                )
            if currency.rate is None:
                raise Refusal(
                    errors.CURRENCY_INACTIVE,
                    f"{currency.code} has no rate in force yet",
                    "currency",
                )
            if not (currency.active and currency.issuer_active):
                raise Refusal(
                    errors.CURRENCY_INACTIVE, f"{currency.code} is not issuing points", "currency"
                )
            v = currency.value(c.item.points)
            limit = currency.issuer_exposure_limit_micro
            if limit is not None:
                if currency.issuer_id not in liability:
                    liability[currency.issuer_id] = await issuer_liability_micro(
                        conn, currency.issuer_id, now
                    )
                if liability[currency.issuer_id] + v > limit:
                    raise Refusal(
                        errors.EXPOSURE_LIMIT,
                        f"{currency.issuer_code}'s outstanding liability would exceed its"
                        f" exposure limit of {micro_to_decimal(limit)}",
                        "points",
                    )
                liability[currency.issuer_id] += v
        except Refusal as refusal:
            refused.append((c, refusal))
            continue
        accepted.append((c, currency, v))

    if accepted:
        posted = await _post_all(conn, merchant_id, initiator, accepted, now)
        for c, _currency, _v in accepted:
            out[c.index] = EarnResult(
                c.item.idempotency_key, entry_id=posted[c.item.idempotency_key]
            )

    # 5. refusals, recorded under their keys
    if refused:
        await conn.execute(
            "UPDATE requests r SET refusal_code = t.code, refusal_field = t.field,"
            "       refusal_message = t.message"
            "  FROM jsonb_to_recordset(%s::jsonb) AS t(key text, code text, field text,"
            "                                          message text)"
            " WHERE r.initiator = %s AND r.idempotency_key = t.key",
            (
                _json(
                    [
                        {
                            "key": c.item.idempotency_key,
                            "code": r.code,
                            "field": r.field,
                            "message": r.message,
                        }
                        for c, r in refused
                    ]
                ),
                initiator,
            ),
        )
        for c, why in refused:
            out[c.index] = EarnResult(c.item.idempotency_key, refusal=why)

    # Repeats of a key inside the call: as if sent one after the other.
    for c in mine:
        result = out[c.index]
        stored[c.item.idempotency_key] = _Stored(
            OPERATION, c.digest, result.entry_id, result.refusal
        )
    for f in followers:
        key = f.item.idempotency_key
        prior = stored.get(key)
        if prior is None or prior.operation != OPERATION or prior.digest != f.digest:
            out[f.index] = EarnResult(key, refusal=_reused())
        else:
            out[f.index] = EarnResult(
                key, entry_id=prior.entry_id, replayed=True, refusal=prior.refusal
            )
    return out


_ENTRIES = """
WITH r AS MATERIALIZED (SELECT %(rates)s::jsonb AS a)
INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, merchant_id, member_id,
                     rates, details, effective_at)
SELECT 'earn', %(initiator)s, x.key,
       substring(%(fingerprints)s::bytea FROM (x.ord * 32 - 31)::int FOR 32),
       %(merchant)s, x.member_id, r.a -> x.place, x.details, %(now)s
  FROM r, ROWS FROM (jsonb_array_elements_text(%(keys)s::jsonb),
                     unnest(%(members)s::bigint[]),
                     unnest(%(places)s::int[]),
                     jsonb_array_elements(%(details)s::jsonb))
       WITH ORDINALITY AS x(key, member_id, place, details, ord)
 ORDER BY x.ord
RETURNING id, idempotency_key
"""
"""The entries of accepted items, in order: keys and details as JSON arrays (PostgreSQL
hands each element over as it is, with nothing to pick out of it), members and the places
of their currencies' rates as array literals, fingerprints as one string of 32-byte
digests, each currency's rates once."""


_FIND_AND_LOCK = """
WITH w AS MATERIALIZED (
  SELECT a.id, a.member_id, a.asset_id
    FROM unnest(%(members)s::bigint[], %(assets)s::int[]) AS x(member_id, asset_id)
    JOIN accounts a
      ON a.kind = 'wallet' AND a.asset_id = x.asset_id AND a.member_id = x.member_id
)
SELECT w.id, w.member_id, w.asset_id, b.amount
  FROM w JOIN balances b ON b.account_id = w.id AND b.stripe = 0
 WHERE (SELECT count(*) FROM w) = %(n)s
 ORDER BY w.id
   FOR UPDATE OF b
"""
"""The wallets of ``(member, asset)`` pairs with their balances, locked in ascending id, when
every one exists; no row (and no lock) when one is missing."""


async def _locked_wallets(
    conn: Conn, pairs: list[tuple[int, int]]
) -> tuple[dict[tuple[int, int], int], dict[int, int]]:
    """The wallets of ``(member, asset)`` pairs, created if missing, with their balance rows
    locked in ascending account id: wallet ids by pair and balances by wallet id.

    When every wallet exists (a member's first earn in a currency creates it), one
    statement finds and locks them; otherwise nothing is locked yet, the missing ones are
    created and all of them are locked in one pass, so the locks are always taken in
    ascending id.
    """
    wanted = sorted(set(pairs))
    cur = await conn.execute(
        _FIND_AND_LOCK,
        {
            "members": _int_array([m for m, _ in wanted]),
            "assets": _int_array([a for _, a in wanted]),
            "n": len(wanted),
        },
    )
    rows = await cur.fetchall()
    if len(rows) == len(wanted):
        return (
            {(int(m), int(a)): int(i) for i, m, a, _ in rows},
            {int(i): int(amount) for i, _, _, amount in rows},
        )
    wallet_of = await _wallets(conn, pairs)
    return wallet_of, await engine.lock_wallets(conn, list(wallet_of.values()))


def _int_array(values: Sequence[int]) -> str:
    """An array literal of integers: cheaper to send than a list the driver adapts element by
    element, and for PostgreSQL to read than JSON. The JSON encoder writes integers faster
    than ``str`` does, and the same way."""
    return "{" + _json(values)[1:-1] + "}"


async def _wallets(conn: Conn, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Create-or-find the wallets ``(member_id, currency_id)``; their account ids."""
    ordered = sorted(set(pairs), key=lambda p: (p[1], p[0]))
    cur = await conn.execute(
        "WITH want AS (SELECT (x.e->>0)::bigint AS member_id, (x.e->>1)::int AS asset_id, x.ord"
        "                FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS x(e, ord)),"
        " made AS (INSERT INTO accounts (kind, asset_id, member_id, stripes)"
        "          SELECT 'wallet', asset_id, member_id, 1 FROM want ORDER BY ord"
        "          ON CONFLICT DO NOTHING RETURNING id, member_id, asset_id)"
        " SELECT id, member_id, asset_id FROM made"
        " UNION ALL"
        " SELECT a.id, a.member_id, a.asset_id FROM accounts a JOIN want w"
        "   ON a.kind = 'wallet' AND a.asset_id = w.asset_id AND a.member_id = w.member_id",
        (_json(ordered),),
    )
    found = {(int(m), int(a)): int(i) for i, m, a in await cur.fetchall()}
    missing = [p for p in ordered if p not in found]
    if missing:
        # Created by a transaction that committed after this statement's snapshot.
        cur = await conn.execute(
            "SELECT a.id, a.member_id, a.asset_id FROM accounts a"
            "  JOIN jsonb_to_recordset(%s::jsonb) AS w(member_id bigint, asset_id int)"
            "    ON a.kind = 'wallet' AND a.asset_id = w.asset_id AND a.member_id = w.member_id",
            (_json([{"member_id": m, "asset_id": a} for m, a in missing]),),
        )
        found.update({(int(m), int(a)): int(i) for i, m, a in await cur.fetchall()})
    assert all(p in found for p in ordered)
    return found


_STRIPES: dict[int, int] = {}
"""Balance rows per account (an account's ``stripes`` never changes)."""


async def _stripes(conn: Conn, account_ids: set[int]) -> dict[int, int]:
    unknown = sorted(a for a in account_ids if a not in _STRIPES)
    if unknown:
        cur = await conn.execute(
            "SELECT id, stripes FROM accounts"
            " WHERE id IN (SELECT x::bigint FROM jsonb_array_elements_text(%s::jsonb) AS x)",
            (_json(unknown),),
        )
        for account_id, stripes in await cur.fetchall():
            _STRIPES[int(account_id)] = int(stripes)
    return {a: _STRIPES[a] for a in account_ids}


async def _post_all(
    conn: Conn,
    merchant_id: int,
    initiator: str,
    accepted: list[tuple[_Item, Currency, int]],
    now: datetime,
) -> dict[str, int]:
    """Write the entries of the accepted items; their entry ids by idempotency key."""
    # 3. wallets, created if missing and locked in ascending id
    wallet_of, balances = await _locked_wallets(
        conn, [(c.item.member_id, cur.id) for c, cur, _ in accepted]
    )
    partner = any(currency.issuer_id != merchant_id for _, currency, _ in accepted)
    asset_id = payer = 0
    if partner:
        asset_id = (await settlement_asset(conn)).id
        payer = await settlement_account(conn, merchant_id)

    # 4. entries, postings (in (account, stripe) order), lots and lot moves
    drafts: list[tuple[_Item, list[Leg], int, int, str]] = []
    # Each currency's expiry of a lot earned now, as an element of an array literal.
    expiry: dict[int, str] = {}
    for c, currency, v in accepted:
        wallet_id = wallet_of[(c.item.member_id, currency.id)]
        n = c.item.points
        repay, _ = credit_split(balances[wallet_id], n)
        balances[wallet_id] += n
        legs = [Leg(currency.outstanding_id, currency.id, -n), Leg(wallet_id, currency.id, n)]
        if currency.issuer_id != merchant_id:
            legs += [Leg(payer, asset_id, -v), Leg(currency.issuer_settlement_id, asset_id, v)]
        legs = merge_legs(legs)
        bad = imbalances(legs)
        if bad or not legs:
            raise UnbalancedEntry(f"earn entry does not balance: {bad}")
        if currency.id not in expiry:
            ends = currency.expiry.expires_at(now)
            expiry[currency.id] = "NULL" if ends is None else f'"{ends.isoformat()}"'
        drafts.append((c, legs, wallet_id, repay, expiry[currency.id]))

    # Each currency's rates go once (an entry refers to its place); each entry's details
    # go as one element of a JSON array, which PostgreSQL hands over as it is.
    place: dict[str, int] = {}
    rates: list[dict[str, str]] = []
    for _, currency, _ in accepted:
        if currency.code not in place:
            assert currency.rate is not None
            place[currency.code] = len(rates)
            rates.append({currency.code: rate_to_text(currency.rate)})
    cur = await conn.execute(
        _ENTRIES,
        {
            "rates": _json(rates),
            "initiator": initiator,
            "merchant": merchant_id,
            "now": now,
            "keys": _json([c.item.idempotency_key for c, _, _ in accepted]),
            "fingerprints": b"".join(c.digest for c, _, _ in accepted),
            "members": _int_array([c.item.member_id for c, _, _ in accepted]),
            "places": _int_array([place[currency.code] for _, currency, _ in accepted]),
            "details": _json(
                [
                    {
                        "currency": currency.code,
                        "points": c.item.points,
                        "value": micro_to_decimal(v),
                        **(c.item.details or {}),
                    }
                    for c, currency, v in accepted
                ]
            ),
        },
    )
    entry_of = {str(key): int(entry_id) for entry_id, key in await cur.fetchall()}

    stripes = await _stripes(conn, {leg.account_id for _, legs, *_ in drafts for leg in legs})
    rows: list[tuple[int, int, int, int, int, int]] = []
    for c, legs, *_ in drafts:
        entry_id = entry_of[c.item.idempotency_key]
        for seq, leg in enumerate(legs, start=1):
            stripe = entry_id % stripes[leg.account_id]
            rows.append((leg.account_id, stripe, entry_id, seq, leg.asset_id, leg.amount))
    rows.sort()
    accounts, _, entries, seqs, assets, amounts = zip(*rows, strict=True)
    await conn.execute(
        "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)"
        " SELECT t.entry_id, t.seq, t.account_id, t.asset_id, t.amount"
        "   FROM unnest(%s::bigint[], %s::smallint[], %s::bigint[], %s::int[], %s::bigint[])"
        "        WITH ORDINALITY AS t(entry_id, seq, account_id, asset_id, amount, ord)"
        "  ORDER BY t.ord",
        tuple(map(_int_array, (entries, seqs, accounts, assets, amounts))),
    )

    # The lots' ids are read back only when an earn repays a debt (its lot moves).
    repaying = any(repay for _, _, _, repay, _ in drafts)
    cur = await conn.execute(
        "INSERT INTO lots (wallet_id, entry_id, original, remaining, earned_at, expires_at)"
        " SELECT t.wallet_id, t.entry_id, t.points, t.points, %s, t.expires_at"
        "   FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[])"
        "        WITH ORDINALITY AS t(wallet_id, entry_id, points, expires_at, ord)"
        "  ORDER BY t.ord" + (" RETURNING id, entry_id" if repaying else ""),
        (
            now,
            _int_array([wallet_id for _, _, wallet_id, _, _ in drafts]),
            _int_array([entry_of[c.item.idempotency_key] for c, *_ in drafts]),
            _int_array([c.item.points for c, *_ in drafts]),
            "{" + ",".join(ends for *_, ends in drafts) + "}",
        ),
    )
    if repaying:
        lot_of = {int(entry_id): int(lot_id) for lot_id, entry_id in await cur.fetchall()}
        moves: dict[int, int] = defaultdict(int)
        move_entry: dict[int, int] = {}
        for c, _, _, repay, _ in drafts:
            if repay:
                entry_id = entry_of[c.item.idempotency_key]
                moves[lot_of[entry_id]] -= repay
                move_entry[lot_of[entry_id]] = entry_id
        await conn.execute(
            "INSERT INTO lot_moves (entry_id, lot_id, amount)"
            " SELECT (x.e->>0)::bigint, (x.e->>1)::bigint, (x.e->>2)::bigint"
            "   FROM jsonb_array_elements(%s::jsonb) AS x(e)",
            (_json([[move_entry[i], i, moves[i]] for i in sorted(moves)]),),
        )
    return entry_of
