"""Property (hypothesis) on real servers: over random small structures written to Postgres,
random households, guardianships and consents, with staff publishing random messages on
random channels tagging random children, no guardian ever subscribes to, or receives a
message of, a household or child not theirs; no message tagging a child without full
consent, or a child they may not consult, ever reaches a guardian; and every allowed
message reaches every guardian allowed to read it.

The expectations are computed here from the generated facts, independently of
realtime/permissions.py. Each example writes fresh structures with unique names (tables
are emptied per test, not per example).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import date

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from realtime.client import Client, ReplyError
from tests.conftest import DEMO_PASSWORD, Gateway, bearer

OK = "ok"
STRUCTURES = 2
QUIET = 0.2  # seconds to wait for a message that must not come (a bounded wait)


@dataclass(frozen=True)
class GuardianPlan:
    households: frozenset[int]
    # child index → (parental authority, consultation, may post, consented)
    children: dict[int, tuple[bool, bool, bool, bool]]


@dataclass(frozen=True)
class Post:
    publisher: int  # the staff member of this structure index publishes
    kind: str
    index: int
    tagged: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    guardians_may_post: tuple[bool, ...]
    groups: tuple[int, ...]  # structure of each group
    children: tuple[tuple[int, int | None], ...]  # (structure, group) of each child
    families: tuple[tuple[int, frozenset[int]], ...]  # (structure, children) of each household
    guardians: tuple[GuardianPlan, ...]
    posts: tuple[Post, ...]

    def circle(self, kind: str, index: int) -> set[int]:
        if kind == "structure":
            return {c for c, (s, _) in enumerate(self.children) if s == index}
        if kind == "group":
            return {c for c, (_, g) in enumerate(self.children) if g == index}
        if kind == "family":
            return set(self.families[index][1])
        return {index}

    def structure_of(self, kind: str, index: int) -> int:
        if kind == "structure":
            return index
        if kind == "group":
            return self.groups[index]
        if kind == "family":
            return self.families[index][0]
        return self.children[index][0]

    def complete(self, child: int) -> bool:
        holders = [g for g in self.guardians if child in g.children and g.children[child][0]]
        return bool(holders) and all(g.children[child][3] for g in holders)

    def expected(self, post: Post) -> str:
        if post.publisher != self.structure_of(post.kind, post.index):
            return "forbidden"
        if not set(post.tagged) <= self.circle(post.kind, post.index):
            return "forbidden"
        if not all(self.complete(c) for c in post.tagged):
            return "consent_missing"
        return OK

    def readable(self, guardian: GuardianPlan) -> set[tuple[str, int]]:
        """What the guardian may follow: their households, their children's groups, the
        children they may consult, the structures they belong to."""
        mine = guardian.children
        found = {("family", f) for f in guardian.households}
        found |= {("child", c) for c, flags in mine.items() if flags[1]}
        found |= {("group", g) for c, (_, g) in enumerate(self.children) if c in mine and g is not None}
        structures = {self.children[c][0] for c in mine} | {self.families[f][0] for f in guardian.households}
        return found | {("structure", s) for s in structures}

    def every_channel(self) -> list[tuple[str, int]]:
        return (
            [("structure", s) for s in range(STRUCTURES)]
            + [("group", g) for g in range(len(self.groups))]
            + [("family", f) for f in range(len(self.families))]
            + [("child", c) for c in range(len(self.children))]
        )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    structure = st.integers(0, STRUCTURES - 1)
    groups = tuple(draw(st.lists(structure, max_size=3)))
    children = []
    for s in draw(st.lists(structure, min_size=1, max_size=4)):
        own_groups = [g for g, gs in enumerate(groups) if gs == s]
        children.append((s, draw(st.sampled_from([None, *own_groups]))))
    families = []
    for s in draw(st.lists(structure, min_size=1, max_size=3)):
        own = [c for c, (cs, _) in enumerate(children) if cs == s]
        families.append((s, draw(st.frozensets(st.sampled_from(own), max_size=3)) if own else frozenset()))
    # Mostly true: consented children, so that many messages are accepted and delivered.
    likely = st.sampled_from([True, True, True, False])
    flags = st.tuples(likely, likely, st.booleans(), likely)
    guardians = tuple(
        GuardianPlan(
            draw(st.frozensets(st.sampled_from(range(len(families))), max_size=2)),
            draw(st.dictionaries(st.sampled_from(range(len(children))), flags, max_size=3)),
        )
        for _ in range(draw(st.integers(1, 3)))
    )
    partial = Plan(draw(st.tuples(st.booleans(), st.booleans())), groups, tuple(children), tuple(families), (), ())
    channels = partial.every_channel()
    posts = []
    for _ in range(draw(st.integers(1, 10))):
        kind, index = draw(st.sampled_from(channels))
        # Mostly its own structure's staff; tags mostly from the channel's circle.
        publisher = draw(st.sampled_from([partial.structure_of(kind, index)] * 3 + [0, 1]))
        circle = sorted(partial.circle(kind, index))
        from_circle = bool(circle) and draw(st.integers(0, 3)) > 0
        choices = circle if from_circle else list(range(len(children)))
        tagged = tuple(draw(st.lists(st.sampled_from(choices), max_size=2, unique=True)))
        posts.append(Post(publisher, kind, index, tagged))
    return Plan(partial.guardians_may_post, groups, tuple(children), tuple(families), guardians, tuple(posts))


@dataclass
class Written:
    """The ids Postgres gave to a plan's rows, and the users' emails."""

    structures: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    families: list[int] = field(default_factory=list)
    guardians: list[int] = field(default_factory=list)
    emails: dict[str, str] = field(default_factory=dict)

    def channel(self, kind: str, index: int) -> str:
        ids = {"structure": self.structures, "group": self.groups, "family": self.families, "child": self.children}
        return f"{kind}:{ids[kind][index]}"


PASSWORD_HASH: list[str] = []


async def write(gateway: Gateway, plan: Plan) -> Written:
    if not PASSWORD_HASH:
        PASSWORD_HASH.append(await gateway.services.accounts.passwords.hash(DEMO_PASSWORD))
    tag = uuid.uuid4().hex[:10]
    w = Written()
    async with gateway.services.pool.acquire() as conn, conn.transaction():

        async def user(key: str, structure: int | None, role: str) -> int:
            email = f"{key}.{tag}@prop.test"
            user_id: int = await conn.fetchval(
                "INSERT INTO users (email, display_name, password_hash) VALUES ($1, $2, $3) RETURNING id",
                email,
                f"{key} {tag}",
                PASSWORD_HASH[0],
            )
            w.emails[key] = email
            if structure is not None:
                await conn.execute(
                    "INSERT INTO memberships (structure_id, user_id, role) VALUES ($1, $2, $3)",
                    structure,
                    user_id,
                    role,
                )
            return user_id

        for s, may_post in enumerate(plan.guardians_may_post):
            w.structures.append(
                await conn.fetchval(
                    "INSERT INTO structures (name, guardians_may_post) VALUES ($1, $2) RETURNING id",
                    f"Structure {s} {tag}",
                    may_post,
                )
            )
            await user(f"staff{s}", w.structures[s], "staff")
        for g, s in enumerate(plan.groups):
            w.groups.append(
                await conn.fetchval(
                    "INSERT INTO groups (structure_id, name) VALUES ($1, $2) RETURNING id", w.structures[s], f"G{g}"
                )
            )
        for c, (s, group) in enumerate(plan.children):
            w.children.append(
                await conn.fetchval(
                    "INSERT INTO children (structure_id, group_id, first_name, last_name, enrolled_on)"
                    " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    w.structures[s],
                    None if group is None else w.groups[group],
                    f"Enfant{c}",
                    tag,
                    date(2026, 9, 1),
                )
            )
        for f, (s, kids) in enumerate(plan.families):
            family_id = await conn.fetchval(
                "INSERT INTO families (structure_id, name) VALUES ($1, $2) RETURNING id", w.structures[s], f"F{f}"
            )
            w.families.append(family_id)
            await conn.executemany(
                "INSERT INTO family_children VALUES ($1, $2)", [(family_id, w.children[c]) for c in kids]
            )
        for i, guardian in enumerate(plan.guardians):
            user_id = await user(f"guardian{i}", None, "guardian")
            w.guardians.append(user_id)
            structures = {plan.children[c][0] for c in guardian.children}
            structures |= {plan.families[f][0] for f in guardian.households}
            await conn.executemany(
                "INSERT INTO memberships (structure_id, user_id, role) VALUES ($1, $2, 'guardian')",
                [(w.structures[s], user_id) for s in sorted(structures)],
            )
            await conn.executemany(
                "INSERT INTO family_members VALUES ($1, $2)", [(w.families[f], user_id) for f in guardian.households]
            )
            for c, (authority, consultation, may_post, consented) in guardian.children.items():
                await conn.execute(
                    "INSERT INTO guardianships (child_id, user_id, parental_authority, consultation, may_post)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    w.children[c],
                    user_id,
                    authority,
                    consultation,
                    may_post,
                )
                if consented:
                    # A consent of a guardian without parental authority must not count.
                    await conn.execute(
                        "INSERT INTO consents (child_id, guardian_id, kind, terms_version, declaration)"
                        " VALUES ($1, $2, 'publication', 1, 'Je déclare…')",
                        w.children[c],
                        user_id,
                    )
    return w


async def outcome(client: Client, channel: str, tagged: list[int]) -> tuple[str, str]:
    try:
        reply = await client.publish(channel, "message", children=tagged)
    except ReplyError as exc:
        return exc.code, ""
    return OK, str(reply["id"])


# Always run: a guardian without consultation of child 0 (fully consented) in its household and
# group, next to a guardian who may consult it; tags on every channel kind of its circle.
EXAMPLE = Plan(
    guardians_may_post=(True, False),
    groups=(0, 1),
    children=((0, 0), (0, 0), (1, 1)),
    families=((0, frozenset({0})), (0, frozenset({1})), (1, frozenset({2}))),
    guardians=(
        GuardianPlan(frozenset({0}), {0: (True, False, True, True)}),
        GuardianPlan(frozenset({0}), {0: (True, True, True, True)}),
        GuardianPlan(frozenset({1, 2}), {1: (True, True, False, False), 2: (True, True, True, True)}),
    ),
    posts=(
        Post(0, "family", 0, (0,)),
        Post(0, "group", 0, (0,)),
        Post(0, "structure", 0, (0,)),
        Post(0, "child", 0, (0,)),
        Post(0, "family", 0, ()),
        Post(0, "group", 0, (1,)),
        Post(0, "family", 1, (1,)),
        Post(1, "family", 2, (2,)),
        Post(1, "family", 0, ()),
        Post(0, "structure", 1, ()),
    ),
)


@pytest.mark.rule("T1", "T2", "T3", "V3", "V4")
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans())
@example(plan=EXAMPLE)
async def test_guardians_receive_exactly_what_is_theirs(gateway: Gateway, plan: Plan) -> None:
    w = await write(gateway, plan)
    tokens = await asyncio.gather(*(gateway.login(w.emails[f"guardian{i}"]) for i in range(len(plan.guardians))))
    staff_tokens = await asyncio.gather(*(gateway.login(w.emails[f"staff{s}"]) for s in range(STRUCTURES)))
    mismatches: list[str] = []
    clients: list[Client] = []
    async with contextlib.AsyncExitStack() as stack:
        for i, (guardian, token) in enumerate(zip(plan.guardians, tokens, strict=True)):
            client = await stack.enter_async_context(Client.connect(gateway.ws, token))
            clients.append(client)
            allowed = {w.channel(k, x) for k, x in plan.readable(guardian)} | {f"user:{w.guardians[i]}"}
            me = await gateway.http.get("/api/me", headers=bearer(token))
            listed = {c["channel"] for c in me.json()["channels"]}
            if listed != allowed:
                mismatches.append(f"guardian{i}: /api/me lists {sorted(listed)}, expected {sorted(allowed)}")
            for channel in sorted(listed):
                await client.subscribe(channel)
            # Everything else of these structures is refused.
            for kind, index in plan.every_channel():
                channel = w.channel(kind, index)
                if channel in allowed:
                    continue
                try:
                    await client.subscribe(channel)
                except ReplyError as exc:
                    if exc.code not in {"forbidden", "consultation_not_authorised"}:
                        mismatches.append(f"guardian{i} subscribing to {channel}: {exc.code}")
                else:
                    mismatches.append(f"guardian{i} could subscribe to {channel}")
        staff = [await stack.enter_async_context(Client.connect(gateway.ws, t)) for t in staff_tokens]
        published: dict[str, tuple[str, tuple[int, ...]]] = {}
        for post in plan.posts:
            channel = w.channel(post.kind, post.index)
            tagged = tuple(w.children[c] for c in post.tagged)
            got, message_id = await outcome(staff[post.publisher], channel, list(tagged))
            if got != plan.expected(post):
                mismatches.append(f"{post} on {channel}: expected {plan.expected(post)}, got {got}")
            if got == OK:
                published[message_id] = (channel, post.tagged)
        for i, (guardian, client) in enumerate(zip(plan.guardians, clients, strict=True)):
            hidden = {c for c, flags in guardian.children.items() if not flags[1]}
            allowed = {w.channel(k, x) for k, x in plan.readable(guardian)}
            due = {m for m, (channel, tagged) in published.items() if channel in allowed and not hidden & set(tagged)}
            received: dict[str, dict[str, object]] = {}
            try:
                while len(received) < len(due):
                    frame = await client.next_push(timeout=5)
                    received[str(frame.get("id"))] = frame
            except TimeoutError:
                pass
            try:
                while True:
                    frame = await client.next_push(timeout=QUIET)
                    received[str(frame.get("id"))] = frame
            except TimeoutError:
                pass
            for message_id, frame in received.items():
                if message_id not in published:
                    mismatches.append(f"guardian{i} received an unexpected frame {frame}")
                    continue
                channel, tagged = published[message_id]
                if channel not in allowed:
                    mismatches.append(f"guardian{i} received a message of {channel}, not theirs")
                if hidden & set(tagged):
                    mismatches.append(f"guardian{i} received a message tagging a child they may not consult")
                if not all(plan.complete(c) for c in tagged):
                    mismatches.append(f"guardian{i} received a message tagging a child without full consent")
            if due - set(received):
                mismatches.append(f"guardian{i} did not receive {sorted(due - set(received))}")
    assert not mismatches, "\n".join(mismatches)
