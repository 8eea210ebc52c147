"""Who may subscribe and publish: one case per rule of the policy, denied by default."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from realtime.channels import Channel, ChannelKind
from realtime.permissions import (
    ALLOW,
    ChannelFacts,
    ChildFacts,
    Decision,
    FamilyFacts,
    Guardianship,
    Principal,
    may_publish,
    may_subscribe,
)

Rule = Callable[[Principal, Channel, ChannelFacts], Decision]
BOTH: list[Rule] = [may_subscribe, may_publish]

STRUCTURE, OTHER_STRUCTURE = 10, 11
FAMILY, OTHER_FAMILY = 20, 21
CHILD, SIBLING, OTHER_CHILD = 30, 31, 32

FAMILY_CHANNEL = Channel(ChannelKind.FAMILY, FAMILY)
CHILD_CHANNEL = Channel(ChannelKind.CHILD, CHILD)


def family(*, guardians_may_post: bool = True, id: int = FAMILY) -> FamilyFacts:
    return FamilyFacts(id, STRUCTURE, guardians_may_post, frozenset({CHILD, SIBLING}))


def child(id: int = CHILD) -> ChildFacts:
    return ChildFacts(id, STRUCTURE)


def staff(structure: int = STRUCTURE, *, disabled: bool = False, terms_accepted: bool = True) -> Principal:
    return Principal(1, "Staff", disabled=disabled, terms_accepted=terms_accepted, staff_of=frozenset({structure}))


def guardian(
    *,
    household: int = FAMILY,
    child: int = CHILD,
    may_post: bool = True,
    consultation: bool = True,
    disabled: bool = False,
    terms_accepted: bool = True,
) -> Principal:
    return Principal(
        2,
        "Guardian",
        disabled=disabled,
        terms_accepted=terms_accepted,
        households=frozenset({household}),
        guardianships={child: Guardianship(child, True, consultation, may_post)},
    )


def denied(decision: Decision, code: str) -> None:
    assert not decision.allowed
    assert decision.code == code
    assert decision.reason


# Family channel


@pytest.mark.parametrize("rule", BOTH)
def test_staff_of_the_structure_may_use_the_family_channel(rule: Rule) -> None:
    assert rule(staff(), FAMILY_CHANNEL, family()) == ALLOW
    assert rule(staff(), FAMILY_CHANNEL, family(guardians_may_post=False)) == ALLOW


@pytest.mark.parametrize("rule", BOTH)
def test_staff_of_another_structure_may_not_use_the_family_channel(rule: Rule) -> None:
    denied(rule(staff(OTHER_STRUCTURE), FAMILY_CHANNEL, family()), "forbidden")


def test_admin_without_staff_membership_gets_nothing_from_admin_of_alone() -> None:
    # staff_of already holds the structures where the user is staff *or* admin.
    admin = Principal(1, "Admin", admin_of=frozenset({STRUCTURE}))
    denied(may_subscribe(admin, FAMILY_CHANNEL, family()), "forbidden")


def test_household_guardian_may_subscribe_to_the_family_channel() -> None:
    assert may_subscribe(guardian(), FAMILY_CHANNEL, family()) == ALLOW
    # Following the family does not depend on posting rights.
    assert may_subscribe(guardian(may_post=False), FAMILY_CHANNEL, family(guardians_may_post=False)) == ALLOW


@pytest.mark.parametrize("rule", BOTH)
def test_guardian_of_another_household_may_not_use_the_family_channel(rule: Rule) -> None:
    denied(rule(guardian(household=OTHER_FAMILY), FAMILY_CHANNEL, family()), "forbidden")


def test_guardian_of_a_child_without_the_household_may_not_publish() -> None:
    denied(may_publish(guardian(household=OTHER_FAMILY), FAMILY_CHANNEL, family()), "forbidden")


@pytest.mark.parametrize(
    ("guardians_may_post", "may_post", "allowed"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_guardian_posting_needs_both_the_family_and_the_guardianship_flags(
    guardians_may_post: bool, may_post: bool, allowed: bool
) -> None:
    decision = may_publish(guardian(may_post=may_post), FAMILY_CHANNEL, family(guardians_may_post=guardians_may_post))
    if allowed:
        assert decision == ALLOW
    else:
        denied(decision, "posting_not_authorised")


def test_guardian_may_post_through_any_child_of_the_family() -> None:
    assert may_publish(guardian(child=SIBLING), FAMILY_CHANNEL, family()) == ALLOW


def test_may_post_for_a_child_outside_the_family_does_not_count() -> None:
    denied(may_publish(guardian(child=OTHER_CHILD), FAMILY_CHANNEL, family()), "posting_not_authorised")


def test_guardian_posts_if_any_guardianship_in_the_family_allows_it() -> None:
    p = Principal(
        2,
        "Guardian",
        households=frozenset({FAMILY}),
        guardianships={
            CHILD: Guardianship(CHILD, True, True, may_post=False),
            SIBLING: Guardianship(SIBLING, True, True, may_post=True),
        },
    )
    assert may_publish(p, FAMILY_CHANNEL, family()) == ALLOW


# Child channel


def test_staff_of_the_structure_may_use_the_child_channel() -> None:
    assert may_subscribe(staff(), CHILD_CHANNEL, child()) == ALLOW
    assert may_publish(staff(), CHILD_CHANNEL, child()) == ALLOW


@pytest.mark.parametrize("rule", BOTH)
def test_staff_of_another_structure_may_not_use_the_child_channel(rule: Rule) -> None:
    denied(rule(staff(OTHER_STRUCTURE), CHILD_CHANNEL, child()), "forbidden")


def test_guardian_with_consultation_may_subscribe_to_the_child_channel() -> None:
    assert may_subscribe(guardian(), CHILD_CHANNEL, child()) == ALLOW


def test_guardian_without_consultation_may_not_subscribe_to_the_child_channel() -> None:
    denied(may_subscribe(guardian(consultation=False), CHILD_CHANNEL, child()), "consultation_not_authorised")


def test_guardian_of_another_child_may_not_subscribe_to_the_child_channel() -> None:
    denied(may_subscribe(guardian(child=OTHER_CHILD), CHILD_CHANNEL, child()), "forbidden")


def test_guardians_never_publish_on_the_child_channel() -> None:
    denied(may_publish(guardian(), CHILD_CHANNEL, child()), "forbidden")


# Facts that do not match the channel


@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize("principal", [staff(), guardian()], ids=["staff", "guardian"])
@pytest.mark.parametrize("channel", [FAMILY_CHANNEL, CHILD_CHANNEL], ids=["family", "child"])
def test_unknown_ids_are_forbidden(rule: Rule, principal: Principal, channel: Channel) -> None:
    denied(rule(principal, channel, None), "forbidden")


@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize("principal", [staff(), guardian()], ids=["staff", "guardian"])
@pytest.mark.parametrize(
    ("channel", "facts"),
    [
        (FAMILY_CHANNEL, family(id=OTHER_FAMILY)),
        (CHILD_CHANNEL, child(OTHER_CHILD)),
        (FAMILY_CHANNEL, child(FAMILY)),  # facts of the wrong kind, same id
        (CHILD_CHANNEL, family(id=CHILD)),
    ],
    ids=["family-id", "child-id", "family-with-child-facts", "child-with-family-facts"],
)
def test_facts_for_another_id_are_forbidden(
    rule: Rule, principal: Principal, channel: Channel, facts: ChannelFacts
) -> None:
    denied(rule(principal, channel, facts), "forbidden")


# Account state


@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize(
    ("principal", "channel", "facts"),
    [(staff(disabled=True), FAMILY_CHANNEL, family()), (guardian(disabled=True), CHILD_CHANNEL, child())],
)
def test_disabled_accounts_are_refused(rule: Rule, principal: Principal, channel: Channel, facts: ChannelFacts) -> None:
    denied(rule(principal, channel, facts), "account_disabled")


@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize(
    ("principal", "channel", "facts"),
    [(staff(terms_accepted=False), FAMILY_CHANNEL, family()), (guardian(terms_accepted=False), CHILD_CHANNEL, child())],
)
def test_terms_must_be_accepted(rule: Rule, principal: Principal, channel: Channel, facts: ChannelFacts) -> None:
    denied(rule(principal, channel, facts), "terms_not_accepted")


@pytest.mark.parametrize("rule", BOTH)
def test_disabled_is_reported_before_terms(rule: Rule) -> None:
    denied(rule(staff(disabled=True, terms_accepted=False), FAMILY_CHANNEL, family()), "account_disabled")


@pytest.mark.parametrize("rule", BOTH)
def test_account_refusals_come_before_unknown_ids(rule: Rule) -> None:
    denied(rule(staff(disabled=True), FAMILY_CHANNEL, None), "account_disabled")
    denied(rule(staff(terms_accepted=False), FAMILY_CHANNEL, None), "terms_not_accepted")


# Channel kinds without a rule


@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize("kind", [ChannelKind.GROUP, ChannelKind.STRUCTURE, ChannelKind.USER])
@pytest.mark.parametrize(
    "principal",
    [
        staff(),
        guardian(),
        Principal(
            1,
            "Everything",
            staff_of=frozenset({STRUCTURE, FAMILY, CHILD}),
            admin_of=frozenset({STRUCTURE}),
            households=frozenset({FAMILY}),
        ),
    ],
    ids=["staff", "guardian", "everything"],
)
@pytest.mark.parametrize("facts", [None, family(), child()], ids=["none", "family", "child"])
def test_other_channel_kinds_are_forbidden(
    rule: Rule, kind: ChannelKind, principal: Principal, facts: ChannelFacts
) -> None:
    # Even with facts whose id matches the channel's.
    channel = Channel(kind, facts.id if facts is not None else 1)
    denied(rule(principal, channel, facts), "forbidden")


def test_user_channel_of_oneself_is_forbidden_too() -> None:
    p = staff()
    denied(may_subscribe(p, Channel(ChannelKind.USER, p.user_id), None), "forbidden")
