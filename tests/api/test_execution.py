"""Plain fields read directly answer exactly what graphql-core's own completion answers."""

from __future__ import annotations

import gc
import json
from decimal import Decimal
from enum import Enum
from typing import Any, cast

import httpx
import pytest
import strawberry
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry import relay
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from world import World, data, gql, make_world

from exchange.api import execution
from exchange.api.context import Context
from exchange.api.execution import LeanExecution
from exchange.api.loaders import Loaders
from exchange.api.scalars import SCALAR_MAP
from exchange.api.schema import schema as hub_schema
from exchange.app import YOUNG_GC_THRESHOLD
from exchange.config import Settings
from exchange.services.tx import Pool
from tests.conftest import app_client

pytestmark = pytest.mark.anyio


@strawberry.enum
class Colour(Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Pal(Named):
    """Strawberry checks its objects' type (it implements an interface) without the info."""

    mood: str | None = None


@strawberry.type
class Picky:
    """Its own type check reads the info: its objects are left to graphql-core."""

    name: str

    @classmethod
    def is_type_of(cls, obj: Any, info: Any) -> bool:
        if info is None:
            BLIND_CHECKS.append(obj)
        return isinstance(obj, Picky)


BLIND_CHECKS: list[Any] = []
"""Objects a type's own ``is_type_of`` was asked about without its info (none may be)."""


@strawberry.type
class Thing(relay.Node):
    """A Relay node: its ``id`` is read directly."""

    id: relay.NodeID[int]
    name: str


@strawberry.type
class OtherThing(relay.Node):
    id: relay.NodeID[int]


@strawberry.type
class Odd(relay.Node):
    """A node with its own ``resolve_id``: its ``id`` is left to graphql-core."""

    id: relay.NodeID[int]

    @classmethod
    def resolve_id(cls, root: Any, *, info: Any) -> str:
        return f"odd-{root.id}"


@strawberry.type
class Leaf:
    name: str
    maybe: str | None = None
    count: int = 0
    tags: list[str] = strawberry.field(default_factory=list)
    colour: Colour = Colour.RED
    amount: Decimal | None = None
    children: list[Leaf] = strawberry.field(default_factory=list)
    friend: Leaf | None = None
    pal: Pal | None = None
    pals: list[Pal] = strawberry.field(default_factory=list)
    picky: Picky | None = None
    thing: Thing | None = None
    things: list[Thing] = strawberry.field(default_factory=list)
    odd: Odd | None = None

    @strawberry.field
    def shout(self, times: int = 1) -> str:
        return self.name.upper() * times

    @strawberry.field
    async def later(self) -> str | None:
        return self.maybe

    @strawberry.field
    def broken(self) -> str | None:
        raise ValueError("broken on purpose")


LEAVES: list[Leaf] = []


@strawberry.type
class Query:
    @strawberry.field
    def leaves(self) -> list[Leaf]:
        return LEAVES

    @strawberry.field
    def strict(self) -> list[Leaf] | None:
        return LEAVES


def _schema(executor: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        execution_context_class=executor,
    )


class Counting(LeanExecution):
    last: LeanExecution | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Counting.last = self


LEAN = _schema(Counting)
STOCK = _schema(StrawberryGraphQLCoreExecutionContext)

FIELDS = [
    "name",
    "maybe",
    "count",
    "tags",
    "colour",
    "amount",
    "shout",
    "shout(times: 2)",
    "later",
    "broken",
    "__typename",
    "children { name count tags }",
    "friend { name maybe }",
    "friend { name friend { count } }",
    "friend { name shout }",
    "pal { name mood }",
    "pals { mood name }",
    "picky { name }",
    "thing { id name }",
    "things { name id }",
    "odd { id }",
    "... on Leaf { count maybe }",
    "maybe @include(if: $flag)",
    "name @skip(if: $flag)",
]


class _SubThing(Thing):
    """Not the node's own class, and it resolves its own id: graphql-core answers it."""

    @classmethod
    def resolve_id(cls, root: Any, *, info: Any) -> str:
        return f"sub-{root.id}"


# Each attribute gets a value the field accepts, or one it must refuse.
VALUES: dict[str, list[Any]] = {
    "name": ["a", "", None],
    "maybe": [None, "m", 7],
    "count": [1, -3, "x", 2**40, None],
    "tags": [[], ["t", "u"], [None]],
    "colour": [Colour.BLUE, Colour.RED, "purple"],
    "amount": [None, Decimal("1.50"), "bad", 2.5],
    "children": [[], None],
    "friend": [None],
    # A Pal, a Pal whose name is refused, an object of another type.
    "pal": [None, Pal(name="p", mood="calm"), Pal(name=None, mood=None), Picky(name="x")],  # type: ignore[arg-type]
    "pals": [[], [Pal(name="q")], [Pal(name="r"), Picky(name="y")]],
    "picky": [None, Picky(name="z"), Pal(name="w")],
    # A node, one without an id, one of another node type, a subclass of the node's class.
    "thing": [
        None,
        Thing(id=3, name="t"),
        Thing(id=None, name="u"),
        OtherThing(id=4),
        _SubThing(id=5, name="s"),
    ],  # type: ignore[arg-type]
    "things": [[], [Thing(id=6, name="v"), Thing(id=7, name="w")], [Thing(id=None, name="x")]],  # type: ignore[arg-type]
    "odd": [None, Odd(id=8)],
}


@st.composite
def leaves(draw: st.DrawFn, depth: int = 0) -> Leaf:
    values = {name: draw(st.sampled_from(options)) for name, options in VALUES.items()}
    leaf = object.__new__(Leaf)
    for name, value in values.items():
        object.__setattr__(leaf, name, value)
    if depth == 0 and draw(st.booleans()):
        leaf.children = draw(st.lists(leaves(depth=1), max_size=2))
        leaf.friend = draw(st.none() | leaves(depth=1))
    return leaf


def _query(picks: list[tuple[int, bool]], root: str) -> str:
    selection = " ".join(
        (f"f{i}: " if alias and not FIELDS[k].startswith("...") else "") + FIELDS[k]
        for i, (k, alias) in enumerate(picks)
    )
    return f"query($flag: Boolean!) {{ {root} {{ {selection} }} }}"


def _shape(result: Any) -> tuple[str, list[tuple[str, str]]]:
    errors = sorted((json.dumps(e.path), e.message) for e in result.errors or [])
    return json.dumps(result.data), errors


@settings(max_examples=150, deadline=None)
@given(
    objects=st.lists(leaves(), max_size=3),
    picks=st.lists(
        st.tuples(st.integers(0, len(FIELDS) - 1), st.booleans()), min_size=1, max_size=6
    ),
    root=st.sampled_from(["leaves", "strict"]),
    flag=st.booleans(),
)
async def test_lean_execution_answers_what_graphql_core_answers(
    objects: list[Leaf], picks: list[tuple[int, bool]], root: str, flag: bool
) -> None:
    LEAVES[:] = objects
    BLIND_CHECKS.clear()
    query = _query(picks, root)
    lean = await LEAN.execute(query, variable_values={"flag": flag})
    stock = await STOCK.execute(query, variable_values={"flag": flag})
    # Same data, in the same order (json.dumps keeps it), and the same errors at the same
    # paths (their order is not part of the answer).
    assert _shape(lean) == _shape(stock)
    assert BLIND_CHECKS == []


async def test_plain_fields_are_read_directly_and_the_rest_is_not() -> None:
    LEAVES[:] = [Leaf(name="a", maybe=None, count=2, tags=[], amount=Decimal("1.5"))]
    query = "{ leaves { name maybe count tags amount colour shout later children { name } } }"
    lean = await LEAN.execute(query)
    stock = await STOCK.execute(query)
    assert lean.errors is None
    assert lean.data == stock.data
    assert lean.data is not None
    assert lean.data["leaves"][0]["amount"] == "1.5"
    assert list(lean.data["leaves"][0]) == [
        "name",
        "maybe",
        "count",
        "tags",
        "amount",
        "colour",
        "shout",
        "later",
        "children",
    ]
    # name, maybe, count, tags (empty), amount, colour and children (empty): plain reads;
    # shout and later have resolvers.
    assert Counting.last is not None
    assert Counting.last.plain_reads == 7


@pytest.fixture
def completed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The source objects that graphql-core's own object completion was given, in order."""
    seen: list[Any] = []
    complete = LeanExecution.complete_object_value

    def counting(self: LeanExecution, *args: Any, **kwargs: Any) -> Any:
        seen.append(args[-2])
        return complete(self, *args, **kwargs)

    monkeypatch.setattr(LeanExecution, "complete_object_value", counting)
    return seen


async def test_a_list_of_plain_objects_is_completed_without_graphql_core(
    completed: list[Any],
) -> None:
    """Objects in a list whose selected fields are all plain are completed directly; one
    item that needs graphql-core (here a null in a non-null field) sends it the whole list,
    with the error at the same path as without the shortcut."""
    LEAVES[:] = [Leaf(name=n, count=i, tags=[]) for i, n in enumerate("abc")]
    query = "{ leaves { name n: count tags colour } }"
    lean = await LEAN.execute(query)
    assert lean.errors is None
    assert lean.data == (await STOCK.execute(query)).data
    assert completed == []
    assert Counting.last is not None
    assert Counting.last.plain_reads == 3 * 4

    object.__setattr__(LEAVES[1], "name", None)
    lean = await LEAN.execute(query)
    assert _shape(lean) == _shape(await STOCK.execute(query))
    assert lean.errors is not None
    assert lean.errors[0].path == ["leaves", 1, "name"]
    assert completed == LEAVES[:2]  # graphql-core's own completion, up to the error
    # Counted once: the first item's four fields as graphql-core completed it, and the
    # second's three before the error, not the abandoned direct attempt.
    assert Counting.last.plain_reads == 4 + 3


async def test_objects_of_plain_fields_are_completed_without_graphql_core(
    completed: list[Any],
) -> None:
    """An object field whose selected fields are all plain, in a list item or not, is
    completed directly, its type checked as graphql-core checks it; an object of the wrong
    type, or one whose type checks itself with the info, goes to graphql-core."""
    pals = [Pal(name="p", mood="calm"), Pal(name="q")]
    LEAVES[:] = [Leaf(name="a", pal=pals[0], pals=pals), Leaf(name="b")]
    query = "{ leaves { name pal { name mood } pals { mood } } }"
    lean = await LEAN.execute(query)
    assert lean.errors is None
    assert lean.data == (await STOCK.execute(query)).data
    assert lean.data == {
        "leaves": [
            {
                "name": "a",
                "pal": {"name": "p", "mood": "calm"},
                "pals": [{"mood": "calm"}, {"mood": None}],
            },
            {"name": "b", "pal": None, "pals": []},
        ]
    }
    assert completed == []
    assert Counting.last is not None
    # Per leaf: name, pal and pals; a's pal's two fields and its pals' one field each.
    assert Counting.last.plain_reads == 2 * 3 + 2 + 2

    LEAVES[:] = [Leaf(name="a", pal=cast(Any, Picky(name="x")))]
    query = "{ leaves { pal { name } } }"
    lean = await LEAN.execute(query)
    assert _shape(lean) == _shape(await STOCK.execute(query))
    assert lean.errors is not None
    assert lean.errors[0].path == ["leaves", 0, "pal"]
    assert completed == [LEAVES[0], LEAVES[0].pal]

    completed.clear()
    BLIND_CHECKS.clear()
    LEAVES[:] = [Leaf(name="a", picky=Picky(name="z"))]
    query = "{ leaves { picky { name } } }"
    lean = await LEAN.execute(query)
    assert lean.errors is None
    assert lean.data == {"leaves": [{"picky": {"name": "z"}}]}
    assert completed == [LEAVES[0], LEAVES[0].picky]
    assert BLIND_CHECKS == []

    # An object that needs graphql-core after all counts none of the fields read directly
    # inside it (the friend's pal, read before its null name): only graphql-core's own
    # completion of the friend counts its pal and the pal's name.
    friend = Leaf(name="f", pal=Pal(name="p"))
    object.__setattr__(friend, "name", None)
    LEAVES[:] = [Leaf(name="a", friend=friend)]
    query = "{ leaves { shout friend { pal { name } name } } }"
    lean = await LEAN.execute(query)
    assert _shape(lean) == _shape(await STOCK.execute(query))
    assert lean.errors is not None
    assert lean.errors[0].path == ["leaves", 0, "friend", "name"]
    assert Counting.last.plain_reads == 2


async def test_a_streamed_list_inside_a_plain_object_is_left_to_graphql_core() -> None:
    """With ``@stream`` enabled, a list under a directly completed object still streams."""

    def incremental(executor: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
        config = StrawberryConfig(
            scalar_map=SCALAR_MAP, enable_experimental_incremental_execution=True
        )
        return strawberry.Schema(query=Query, config=config, execution_context_class=executor)

    LEAVES[:] = [Leaf(name="a", friend=Leaf(name="f", tags=["x", "y"]))]
    query = "{ leaves { friend { tags @stream(initialCount: 1) } } }"
    first: list[Any] = []
    for executor in (LeanExecution, StrawberryGraphQLCoreExecutionContext):
        result = cast(Any, await incremental(executor).execute(query))
        initial = result.initial_result
        first.append((initial.data, [p.path for p in initial.pending]))
    assert first[0] == first[1]
    assert first[0] == (
        {"leaves": [{"friend": {"tags": ["x"]}}]},
        [["leaves", 0, "friend", "tags"]],
    )


def test_the_hub_serves_with_lean_execution() -> None:
    assert hub_schema.execution_context_class is LeanExecution


@pytest.fixture
async def world(pool: Pool, settings: Settings) -> World:
    return await make_world(pool, settings)


async def test_a_batch_payload_is_answered_by_plain_reads(
    world: World, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP: each batch result's fields are read directly, and say what they should."""
    shop = await world.shop("tea-house")
    await world.currency(shop, "TEA", "0.01")
    for i in range(3):
        await world.member(shop, f"c-{i}")
    executions: list[LeanExecution] = []
    init = LeanExecution.__init__

    def recording(self: LeanExecution, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        executions.append(self)

    monkeypatch.setattr(execution.LeanExecution, "__init__", recording)
    items = [
        {"customerRef": f"c-{i}", "currency": "TEA", "points": "5", "idempotencyKey": f"k{i}"}
        for i in range(3)
    ] + [{"customerRef": "nobody", "currency": "TEA", "points": "5", "idempotencyKey": "k9"}]
    body = await gql(
        client,
        """mutation ($input: AwardPointsBatchInput!) { awardPointsBatch(input: $input) {
            awarded results { idempotencyKey entryId points replayed userErrors { code } } } }""",
        {"input": {"items": items}},
        shop.headers,
    )
    out = data(body)["awardPointsBatch"]
    assert out["awarded"] == 3
    assert [r["idempotencyKey"] for r in out["results"]] == ["k0", "k1", "k2", "k9"]
    assert [r["points"] for r in out["results"]] == ["5", "5", "5", None]
    assert all(r["entryId"] for r in out["results"][:3])
    assert out["results"][3]["entryId"] is None
    assert [r["userErrors"] for r in out["results"][:3]] == [[], [], []]
    assert [e["code"] for e in out["results"][3]["userErrors"]] == ["NOT_FOUND"]
    # Five plain fields in each result, the refused one's user error's code, and the
    # payload's awarded and results: graphql-core completes none of the results.
    assert [e.plain_reads for e in executions] == [4 * 5 + 1 + 2]


async def test_a_balance_read_completes_only_the_wallet_through_graphql_core(
    world: World, client: httpx.AsyncClient, completed: list[Any]
) -> None:
    """Over HTTP: the balances, with their currencies, are completed directly."""
    shop = await world.shop("tea-house")
    await world.currency(shop, "TEA", "0.01")
    await world.currency(shop, "CUP", "0.5")
    member = await world.member(shop, "c-1")
    await world.earn(shop, member, "TEA", 5)
    await world.earn(shop, member, "CUP", 3)
    member_headers = await world.member_headers(shop, "c-1")
    query = "{ wallet { balances { currency { code } points value } totalValue } }"
    wallet = data(await gql(client, query, None, member_headers))["wallet"]
    assert sorted(wallet["balances"], key=lambda b: b["currency"]["code"]) == [
        {"currency": {"code": "CUP"}, "points": "3", "value": "1.500000"},
        {"currency": {"code": "TEA"}, "points": "5", "value": "0.050000"},
    ]
    assert wallet["totalValue"] == "1.550000"
    assert [type(source).__name__ for source in completed] == ["Wallet"]


async def test_a_node_id_is_read_directly(completed: list[Any]) -> None:
    """A Relay node's ``id`` is a resolver to graphql-core; read directly, its object and the
    list holding it are completed without graphql-core, unless the node's class resolves
    its own id."""
    LEAVES[:] = [Leaf(name="a", thing=Thing(id=3, name="t"), things=[Thing(id=4, name="u")])]
    query = "{ leaves { thing { id name } things { id } } }"
    lean = await LEAN.execute(query)
    stock = await STOCK.execute(query)
    assert lean.errors is None
    assert lean.data == stock.data
    assert lean.data == {
        "leaves": [
            {
                "thing": {"id": str(relay.GlobalID("Thing", "3")), "name": "t"},
                "things": [{"id": str(relay.GlobalID("Thing", "4"))}],
            }
        ]
    }
    assert completed == []
    LEAVES[0].odd = Odd(id=5)
    lean = await LEAN.execute("{ leaves { odd { id } } }")
    assert lean.data == {"leaves": [{"odd": {"id": str(relay.GlobalID("Odd", "odd-5"))}}]}
    assert [type(source).__name__ for source in completed] == ["Leaf", "Odd"]
    completed.clear()
    LEAVES[0].thing = _SubThing(id=6, name="s")
    lean = await LEAN.execute("{ leaves { thing { id } } }")
    assert lean.data == {"leaves": [{"thing": {"id": str(relay.GlobalID("Thing", "sub-6"))}}]}
    assert [type(source).__name__ for source in completed] == ["Leaf", "_SubThing"]


async def test_an_earn_completes_only_its_payload_through_graphql_core(
    world: World, client: httpx.AsyncClient, completed: list[Any]
) -> None:
    """Over HTTP, the bench's earn: the payload's entry, with its node id, is read directly."""
    shop = await world.shop("tea-house")
    await world.currency(shop, "TEA", "0.01")
    await world.member(shop, "c-1")
    earn = """mutation ($input: AwardPointsInput!) { awardPoints(input: $input) {
        entry { id } points replayed userErrors { code field message } } }"""
    variables = {
        "input": {
            "customerRef": "c-1",
            "currency": "TEA",
            "points": "7",
            "reason": "visit",
            "idempotencyKey": "k-1",
        }
    }
    payload = data(await gql(client, earn, variables, shop.headers))["awardPoints"]
    assert payload["points"] == "7"
    assert payload["replayed"] is False
    assert payload["userErrors"] == []
    assert [type(source).__name__ for source in completed] == ["AwardPointsPayload"]
    node = data(
        await gql(
            client,
            "query ($id: ID!) { node(id: $id) { id } }",
            {"id": payload["entry"]["id"]},
            shop.headers,
        )
    )["node"]
    assert node == payload["entry"]  # the id read directly is the node's id


async def test_requests_leave_no_cyclic_garbage(world: World, client: httpx.AsyncClient) -> None:
    """An execution and the request's loaders are freed when the request is done, not left
    for the garbage collector (they held themselves through bound methods)."""
    shop = await world.shop("tea-house")
    await world.currency(shop, "TEA", "0.01")
    member = await world.member(shop, "c-1")
    await world.earn(shop, member, "TEA", 5)
    member_headers = await world.member_headers(shop, "c-1")
    earn = """mutation ($input: AwardPointsInput!) { awardPoints(input: $input) {
        entry { id points } userErrors { code } } }"""
    balances = "{ wallet { balances { currency { code } points value } totalValue } }"
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(3):
            variables = {
                "input": {
                    "customerRef": "c-1",
                    "currency": "TEA",
                    "points": "2",
                    "reason": "visit",
                    "idempotencyKey": f"cycle-{n}",
                }
            }
            out = data(await gql(client, earn, variables, shop.headers))["awardPoints"]
            assert out["entry"], out
            assert data(await gql(client, balances, None, member_headers))["wallet"]["balances"]
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, LeanExecution | Loaders | Context)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


def test_the_weak_helpers_call_the_live_execution_and_refuse_after_it() -> None:
    class Owner:
        def gather_async_work(self, *args: Any) -> tuple[str, tuple[Any, ...]]:
            return ("gather", args)

        def track_async_work(self, *args: Any) -> tuple[str, tuple[Any, ...]]:
            return ("track", args)

    owner = Owner()
    helpers = execution._weak_helpers(cast(Any, owner))
    assert helpers.gather(1, 2) == ("gather", (1, 2))
    assert helpers.track(3) == ("track", (3,))
    del owner
    gc.collect()
    with pytest.raises(RuntimeError, match="ended"):
        helpers.gather()


async def test_the_hub_raises_the_young_gc_threshold_while_it_serves(
    settings: Settings, database_url: str
) -> None:
    before = gc.get_threshold()
    async with app_client(settings, database_url) as client:
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
        assert (await client.get("/healthz")).status_code == 200
    assert gc.get_threshold() == before
