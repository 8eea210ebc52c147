"""Who may subscribe to and publish on which channel: a pure policy over facts.

No I/O here: `realtime.directory` loads the facts, the gateway asks these functions.
Denied by default: every rule that is not met, and every channel kind without a rule,
is a refusal with a stable code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from realtime.channels import Channel, ChannelKind


@dataclass(frozen=True, slots=True)
class Guardianship:
    child_id: int
    parental_authority: bool
    consultation: bool
    may_post: bool


@dataclass(frozen=True, slots=True)
class Principal:
    """What the policy knows of the user asking."""

    user_id: int
    name: str
    disabled: bool = False
    terms_accepted: bool = True
    staff_of: frozenset[int] = frozenset()  # structures where the user is staff or admin
    admin_of: frozenset[int] = frozenset()
    households: frozenset[int] = frozenset()
    guardianships: Mapping[int, Guardianship] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FamilyFacts:
    id: int
    structure_id: int
    guardians_may_post: bool
    child_ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class ChildFacts:
    id: int
    structure_id: int


# None: the id does not exist. It is refused exactly like another household's id, so that
# ids cannot be probed.
ChannelFacts = FamilyFacts | ChildFacts | None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    code: str = ""
    reason: str = ""


ALLOW = Decision(True)


def deny(code: str, reason: str) -> Decision:
    return Decision(False, code, reason)


FORBIDDEN = deny("forbidden", "you may not use this channel")


def _account(p: Principal) -> Decision | None:
    if p.disabled:
        return deny("account_disabled", "this account is disabled")
    if not p.terms_accepted:
        return deny("terms_not_accepted", "the current terms of use must be accepted first")
    return None


def may_subscribe(p: Principal, channel: Channel, facts: ChannelFacts) -> Decision:
    if (refusal := _account(p)) is not None:
        return refusal
    if channel.kind is ChannelKind.FAMILY and isinstance(facts, FamilyFacts) and facts.id == channel.id:
        if facts.structure_id in p.staff_of or facts.id in p.households:
            return ALLOW
        return FORBIDDEN
    if channel.kind is ChannelKind.CHILD and isinstance(facts, ChildFacts) and facts.id == channel.id:
        if facts.structure_id in p.staff_of:
            return ALLOW
        guardianship = p.guardianships.get(facts.id)
        if guardianship is None:
            return FORBIDDEN
        if not guardianship.consultation:
            return deny("consultation_not_authorised", "you are not authorised to consult this child's content")
        return ALLOW
    return FORBIDDEN


def may_publish(p: Principal, channel: Channel, facts: ChannelFacts) -> Decision:
    if (refusal := _account(p)) is not None:
        return refusal
    if channel.kind is ChannelKind.FAMILY and isinstance(facts, FamilyFacts) and facts.id == channel.id:
        if facts.structure_id in p.staff_of:
            return ALLOW
        if facts.id not in p.households:
            return FORBIDDEN
        may_post = any(g.may_post for child, g in p.guardianships.items() if child in facts.child_ids)
        if facts.guardians_may_post and may_post:
            return ALLOW
        return deny("posting_not_authorised", "the structure has not authorised you to post here")
    if channel.kind is ChannelKind.CHILD and isinstance(facts, ChildFacts) and facts.id == channel.id:
        if facts.structure_id in p.staff_of:
            return ALLOW
        return FORBIDDEN
    return FORBIDDEN
