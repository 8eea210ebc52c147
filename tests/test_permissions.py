"""Who may subscribe and publish: one case per rule of the policy, denied by default."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.channels import Channel, ChannelKind
from realtime.permissions import (
    ALLOW,
    FORBIDDEN,
    ChannelFacts,
    ChildConsent,
    ChildFacts,
    Decision,
    FamilyFacts,
    GroupFacts,
    Guardianship,
    Holder,
    Principal,
    StructureFacts,
    UserFacts,
    channel_children,
    may_administer,
    may_edit_child,
    may_moderate,
    may_post_kind,
    may_publish,
    may_report,
    may_sign_consent,
    may_subscribe,
    may_tag,
    may_view_consents,
    may_withdraw,
    sees,
    structure_of,
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


@pytest.mark.rule("S10", "P1")
@pytest.mark.parametrize("rule", BOTH)
def test_staff_of_the_structure_may_use_the_family_channel(rule: Rule) -> None:
    assert rule(staff(), FAMILY_CHANNEL, family()) == ALLOW
    assert rule(staff(), FAMILY_CHANNEL, family(guardians_may_post=False)) == ALLOW


@pytest.mark.rule("S12", "P6")
@pytest.mark.parametrize("rule", BOTH)
def test_staff_of_another_structure_may_not_use_the_family_channel(rule: Rule) -> None:
    denied(rule(staff(OTHER_STRUCTURE), FAMILY_CHANNEL, family()), "forbidden")


def test_admin_without_staff_membership_gets_nothing_from_admin_of_alone() -> None:
    # staff_of already holds the structures where the user is staff *or* admin.
    admin = Principal(1, "Admin", admin_of=frozenset({STRUCTURE}))
    denied(may_subscribe(admin, FAMILY_CHANNEL, family()), "forbidden")


@pytest.mark.rule("S11")
def test_household_guardian_may_subscribe_to_the_family_channel() -> None:
    assert may_subscribe(guardian(), FAMILY_CHANNEL, family()) == ALLOW
    # Following the family does not depend on posting rights.
    assert may_subscribe(guardian(may_post=False), FAMILY_CHANNEL, family(guardians_may_post=False)) == ALLOW


@pytest.mark.rule("S12", "P6")
@pytest.mark.parametrize("rule", BOTH)
def test_guardian_of_another_household_may_not_use_the_family_channel(rule: Rule) -> None:
    denied(rule(guardian(household=OTHER_FAMILY), FAMILY_CHANNEL, family()), "forbidden")


@pytest.mark.rule("P6")
def test_guardian_of_a_child_without_the_household_may_not_publish() -> None:
    denied(may_publish(guardian(household=OTHER_FAMILY), FAMILY_CHANNEL, family()), "forbidden")


@pytest.mark.rule("P2", "P3")
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


@pytest.mark.rule("P2")
def test_guardian_may_post_through_any_child_of_the_family() -> None:
    assert may_publish(guardian(child=SIBLING), FAMILY_CHANNEL, family()) == ALLOW


@pytest.mark.rule("P3")
def test_may_post_for_a_child_outside_the_family_does_not_count() -> None:
    denied(may_publish(guardian(child=OTHER_CHILD), FAMILY_CHANNEL, family()), "posting_not_authorised")


@pytest.mark.rule("P2")
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


@pytest.mark.rule("S6", "P1")
def test_staff_of_the_structure_may_use_the_child_channel() -> None:
    assert may_subscribe(staff(), CHILD_CHANNEL, child()) == ALLOW
    assert may_publish(staff(), CHILD_CHANNEL, child()) == ALLOW


@pytest.mark.rule("S9", "P6")
@pytest.mark.parametrize("rule", BOTH)
def test_staff_of_another_structure_may_not_use_the_child_channel(rule: Rule) -> None:
    denied(rule(staff(OTHER_STRUCTURE), CHILD_CHANNEL, child()), "forbidden")


@pytest.mark.rule("S7")
def test_guardian_with_consultation_may_subscribe_to_the_child_channel() -> None:
    assert may_subscribe(guardian(), CHILD_CHANNEL, child()) == ALLOW


@pytest.mark.rule("S8")
def test_guardian_without_consultation_may_not_subscribe_to_the_child_channel() -> None:
    denied(may_subscribe(guardian(consultation=False), CHILD_CHANNEL, child()), "consultation_not_authorised")


@pytest.mark.rule("S9")
def test_guardian_of_another_child_may_not_subscribe_to_the_child_channel() -> None:
    denied(may_subscribe(guardian(child=OTHER_CHILD), CHILD_CHANNEL, child()), "forbidden")


@pytest.mark.rule("P4")
def test_guardians_never_publish_on_the_child_channel() -> None:
    denied(may_publish(guardian(), CHILD_CHANNEL, child()), "forbidden")


# Facts that do not match the channel


@pytest.mark.rule("U1")
@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize("principal", [staff(), guardian()], ids=["staff", "guardian"])
@pytest.mark.parametrize("channel", [FAMILY_CHANNEL, CHILD_CHANNEL], ids=["family", "child"])
def test_unknown_ids_are_forbidden(rule: Rule, principal: Principal, channel: Channel) -> None:
    denied(rule(principal, channel, None), "forbidden")


@pytest.mark.rule("U1")
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


@pytest.mark.rule("A1")
@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize(
    ("principal", "channel", "facts"),
    [(staff(disabled=True), FAMILY_CHANNEL, family()), (guardian(disabled=True), CHILD_CHANNEL, child())],
)
def test_disabled_accounts_are_refused(rule: Rule, principal: Principal, channel: Channel, facts: ChannelFacts) -> None:
    denied(rule(principal, channel, facts), "account_disabled")


@pytest.mark.rule("A2")
@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize(
    ("principal", "channel", "facts"),
    [(staff(terms_accepted=False), FAMILY_CHANNEL, family()), (guardian(terms_accepted=False), CHILD_CHANNEL, child())],
)
def test_terms_must_be_accepted(rule: Rule, principal: Principal, channel: Channel, facts: ChannelFacts) -> None:
    denied(rule(principal, channel, facts), "terms_not_accepted")


@pytest.mark.rule("A1")
@pytest.mark.parametrize("rule", BOTH)
def test_disabled_is_reported_before_terms(rule: Rule) -> None:
    denied(rule(staff(disabled=True, terms_accepted=False), FAMILY_CHANNEL, family()), "account_disabled")


@pytest.mark.rule("A1", "A2")
@pytest.mark.parametrize("rule", BOTH)
def test_account_refusals_come_before_unknown_ids(rule: Rule) -> None:
    denied(rule(staff(disabled=True), FAMILY_CHANNEL, None), "account_disabled")
    denied(rule(staff(terms_accepted=False), FAMILY_CHANNEL, None), "terms_not_accepted")


# Facts of the wrong kind, for the structure, group and user channels


@pytest.mark.rule("U1")
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
def test_other_channel_kinds_with_mismatched_facts_are_forbidden(
    rule: Rule, kind: ChannelKind, principal: Principal, facts: ChannelFacts
) -> None:
    # Even with facts whose id matches the channel's.
    channel = Channel(kind, facts.id if facts is not None else 1)
    denied(rule(principal, channel, facts), "forbidden")


@pytest.mark.rule("U1")
def test_user_channel_of_oneself_without_facts_is_forbidden() -> None:
    p = staff()
    denied(may_subscribe(p, Channel(ChannelKind.USER, p.user_id), None), "forbidden")


# Structure channel: every member reads; staff and admins publish

STRUCTURE_CHANNEL = Channel(ChannelKind.STRUCTURE, STRUCTURE)
GROUP, OTHER_GROUP = 40, 41
GROUP_CHANNEL = Channel(ChannelKind.GROUP, GROUP)


def structure(id: int = STRUCTURE) -> StructureFacts:
    return StructureFacts(id)


def group(*, children: frozenset[int] = frozenset({CHILD, SIBLING}), id: int = GROUP) -> GroupFacts:
    return GroupFacts(id, STRUCTURE, children)


def member(structure_id: int = STRUCTURE) -> Principal:
    """A guardian of the structure with no child or household (e.g. every child has left)."""
    return Principal(3, "Member", member_of=frozenset({structure_id}))


def admin(structure_id: int = STRUCTURE) -> Principal:
    ids = frozenset({structure_id})
    return Principal(4, "Admin", staff_of=ids, admin_of=ids, member_of=ids)


@pytest.mark.rule("S1")
def test_every_member_of_the_structure_may_read_its_channel() -> None:
    for p in (member(), admin(), Principal(5, "Staff", staff_of=frozenset({STRUCTURE}))):
        assert may_subscribe(p, STRUCTURE_CHANNEL, structure()) == ALLOW


@pytest.mark.rule("P1")
@pytest.mark.parametrize("principal", [staff(), admin()], ids=["staff", "admin"])
def test_staff_and_admins_publish_on_the_structure_channel(principal: Principal) -> None:
    assert may_publish(principal, STRUCTURE_CHANNEL, structure()) == ALLOW


@pytest.mark.rule("P4")
def test_guardians_do_not_publish_on_the_structure_channel() -> None:
    p = replace(guardian(), member_of=frozenset({STRUCTURE}))
    denied(may_publish(p, STRUCTURE_CHANNEL, structure()), "forbidden")
    denied(may_publish(member(), STRUCTURE_CHANNEL, structure()), "forbidden")


@pytest.mark.rule("S2", "P6")
@pytest.mark.parametrize("rule", BOTH)
@pytest.mark.parametrize(
    "principal",
    [member(OTHER_STRUCTURE), admin(OTHER_STRUCTURE), staff(OTHER_STRUCTURE), guardian()],
    ids=["member", "admin", "staff", "guardian-without-membership"],
)
def test_non_members_may_not_use_the_structure_channel(rule: Rule, principal: Principal) -> None:
    denied(rule(principal, STRUCTURE_CHANNEL, structure()), "forbidden")


@pytest.mark.rule("U1")
@pytest.mark.parametrize("rule", BOTH)
def test_structure_facts_for_another_structure_are_forbidden(rule: Rule) -> None:
    denied(rule(admin(), STRUCTURE_CHANNEL, structure(OTHER_STRUCTURE)), "forbidden")
    denied(rule(admin(), STRUCTURE_CHANNEL, None), "forbidden")


# Group channel: staff publish; guardians of the group's children read


@pytest.mark.rule("S3", "P1")
def test_staff_of_the_structure_may_use_the_group_channel() -> None:
    for p in (staff(), admin()):
        assert may_subscribe(p, GROUP_CHANNEL, group()) == ALLOW
        assert may_publish(p, GROUP_CHANNEL, group()) == ALLOW
    # An empty group too: staff follow it before any child joins.
    assert may_subscribe(staff(), GROUP_CHANNEL, group(children=frozenset())) == ALLOW


@pytest.mark.rule("S5", "P6")
@pytest.mark.parametrize("rule", BOTH)
def test_staff_of_another_structure_may_not_use_the_group_channel(rule: Rule) -> None:
    denied(rule(staff(OTHER_STRUCTURE), GROUP_CHANNEL, group()), "forbidden")
    denied(rule(admin(OTHER_STRUCTURE), GROUP_CHANNEL, group()), "forbidden")


@pytest.mark.rule("S4")
@pytest.mark.parametrize("child_id", [CHILD, SIBLING])
def test_guardian_of_a_child_of_the_group_may_read_it(child_id: int) -> None:
    assert may_subscribe(guardian(child=child_id), GROUP_CHANNEL, group()) == ALLOW


@pytest.mark.rule("S4")
@pytest.mark.parametrize(
    ("parental_authority", "consultation", "may_post"),
    [(False, False, False), (True, False, False), (False, True, False), (False, False, True)],
)
def test_any_guardianship_of_a_child_of_the_group_opens_it(
    parental_authority: bool, consultation: bool, may_post: bool
) -> None:
    # The flags are not looked at: even a guardian who may not consult the child follows its group.
    flags = Guardianship(SIBLING, parental_authority, consultation, may_post)
    p = Principal(2, "Guardian", member_of=frozenset({STRUCTURE}), guardianships={SIBLING: flags})
    assert may_subscribe(p, GROUP_CHANNEL, group()) == ALLOW


@pytest.mark.rule("P4")
def test_guardians_never_publish_on_the_group_channel() -> None:
    denied(may_publish(guardian(), GROUP_CHANNEL, group()), "forbidden")


@pytest.mark.rule("S5")
@pytest.mark.parametrize(
    "principal",
    [guardian(child=OTHER_CHILD), member(), replace(guardian(child=OTHER_CHILD), member_of=frozenset({STRUCTURE}))],
    ids=["guardian-of-another-child", "member", "member-guardian-of-another-child"],
)
def test_others_may_not_read_the_group_channel(principal: Principal) -> None:
    denied(may_subscribe(principal, GROUP_CHANNEL, group()), "forbidden")


@pytest.mark.rule("S5")
def test_a_household_alone_does_not_open_the_group_channel() -> None:
    p = Principal(2, "Guardian", households=frozenset({FAMILY}), member_of=frozenset({STRUCTURE}))
    denied(may_subscribe(p, GROUP_CHANNEL, group()), "forbidden")


# User channel: its owner only subscribes; only the server publishes


@pytest.mark.rule("S13", "S14")
def test_only_the_owner_subscribes_to_a_user_channel() -> None:
    p = guardian()
    own = Channel(ChannelKind.USER, p.user_id)
    assert may_subscribe(p, own, UserFacts(p.user_id)) == ALLOW
    other = Channel(ChannelKind.USER, 99)
    denied(may_subscribe(p, other, UserFacts(99)), "forbidden")
    # Staff and admins do not read their users' channels either.
    denied(may_subscribe(admin(), other, UserFacts(99)), "forbidden")


@pytest.mark.rule("P5")
@pytest.mark.parametrize("principal", [staff(), admin(), guardian()], ids=["staff", "admin", "guardian"])
def test_nobody_publishes_on_a_user_channel(principal: Principal) -> None:
    own = Channel(ChannelKind.USER, principal.user_id)
    denied(may_publish(principal, own, UserFacts(principal.user_id)), "forbidden")
    denied(may_publish(principal, Channel(ChannelKind.USER, 99), UserFacts(99)), "forbidden")


@pytest.mark.rule("A1")
@pytest.mark.parametrize("rule", BOTH)
def test_user_channels_follow_the_account_state(rule: Rule) -> None:
    p = guardian(disabled=True)
    denied(rule(p, Channel(ChannelKind.USER, p.user_id), UserFacts(p.user_id)), "account_disabled")


# Image rights: may_tag

HOLDER_A, HOLDER_B = Holder(100, "Anne Dupont"), Holder(101, "Marc Dupont")


def consent(
    child_id: int = CHILD,
    *,
    holders: tuple[Holder, ...] = (HOLDER_A, HOLDER_B),
    consented: frozenset[int] = frozenset({100, 101}),
    structure_id: int = STRUCTURE,
    name: str = "Hugo Dupont",
) -> ChildConsent:
    return ChildConsent(child_id, structure_id, name, holders, consented)


CIRCLES: list[tuple[ChannelFacts, Collection[int]]] = [
    (child(), channel_children(child())),
    (family(), channel_children(family())),
    (group(), channel_children(group())),
    (structure(), channel_children(structure(), {CHILD, SIBLING, OTHER_CHILD})),
]
CIRCLE_IDS = ["child", "family", "group", "structure"]


@pytest.mark.rule("T1")
def test_each_channel_kind_has_its_circle() -> None:
    assert set(channel_children(child())) == {CHILD}
    assert set(channel_children(family())) == {CHILD, SIBLING}
    assert set(channel_children(group(children=frozenset({OTHER_CHILD})))) == {OTHER_CHILD}
    assert set(channel_children(structure(), {CHILD, OTHER_CHILD})) == {CHILD, OTHER_CHILD}
    assert set(channel_children(UserFacts(1), {CHILD})) == set()
    assert set(channel_children(None, {CHILD})) == set()


@pytest.mark.rule("T2")
@pytest.mark.parametrize(("facts", "circle"), CIRCLES, ids=CIRCLE_IDS)
def test_a_consented_child_of_the_circle_may_be_tagged(facts: ChannelFacts, circle: Collection[int]) -> None:
    assert may_tag(facts, [consent()], circle) == ALLOW
    assert may_tag(facts, [], circle) == ALLOW


@pytest.mark.rule("T1")
@pytest.mark.parametrize(
    ("facts", "circle", "outsider"),
    [
        (child(), channel_children(child()), SIBLING),
        (family(), channel_children(family()), OTHER_CHILD),
        (group(), channel_children(group()), OTHER_CHILD),
        (structure(), channel_children(structure(), {CHILD}), OTHER_CHILD),
        (UserFacts(1), channel_children(UserFacts(1)), CHILD),
        (None, (), CHILD),
    ],
    ids=[*CIRCLE_IDS, "user", "unknown"],
)
def test_a_child_outside_the_circle_may_not_be_tagged(
    facts: ChannelFacts, circle: Collection[int], outsider: int
) -> None:
    denied(may_tag(facts, [consent(outsider)], circle), "forbidden")
    # One outsider among consented children is enough, and it is reported before consent.
    denied(may_tag(facts, [consent(), consent(outsider, consented=frozenset())], circle), "forbidden")


@pytest.mark.rule("T1")
@pytest.mark.parametrize(("facts", "circle"), CIRCLES, ids=CIRCLE_IDS)
def test_a_child_of_another_structure_may_not_be_tagged(facts: ChannelFacts, circle: Collection[int]) -> None:
    # Same id as a child of the circle, but of another structure: never trusted.
    denied(may_tag(facts, [consent(structure_id=OTHER_STRUCTURE)], circle), "forbidden")


@pytest.mark.rule("T3")
@pytest.mark.parametrize(("facts", "circle"), CIRCLES, ids=CIRCLE_IDS)
def test_a_missing_holder_refuses_the_tag_and_is_named(facts: ChannelFacts, circle: Collection[int]) -> None:
    decision = may_tag(facts, [consent(consented=frozenset({100}))], circle)
    denied(decision, "consent_missing")
    assert "Hugo Dupont" in decision.reason
    assert "Marc Dupont" in decision.reason
    assert "Anne Dupont" not in decision.reason
    assert decision.details == (
        {"child": {"id": CHILD, "name": "Hugo Dupont"}, "missing": [{"id": 101, "name": "Marc Dupont"}]},
    )


@pytest.mark.rule("T3")
def test_every_lacking_child_is_named_with_every_missing_holder() -> None:
    lacking = [
        consent(consented=frozenset()),
        consent(SIBLING, holders=(Holder(102, "Julie Martin"),), consented=frozenset({102})),
    ]
    decision = may_tag(family(), lacking, channel_children(family()))
    denied(decision, "consent_missing")
    assert decision.details == (
        {
            "child": {"id": CHILD, "name": "Hugo Dupont"},
            "missing": [{"id": 100, "name": "Anne Dupont"}, {"id": 101, "name": "Marc Dupont"}],
        },
    )


@pytest.mark.rule("T4")
def test_a_child_without_any_recorded_holder_cannot_be_tagged() -> None:
    decision = may_tag(child(), [consent(holders=(), consented=frozenset({100}))], channel_children(child()))
    denied(decision, "consent_missing")
    assert "no holder of parental authority recorded" in decision.reason
    assert decision.details == ({"child": {"id": CHILD, "name": "Hugo Dupont"}, "missing": []},)


@pytest.mark.rule("T2")
def test_the_sole_holders_consent_is_enough() -> None:
    sole = consent(holders=(HOLDER_A,), consented=frozenset({100}))
    assert may_tag(child(), [sole], channel_children(child())) == ALLOW


@pytest.mark.rule("T3")
def test_consent_from_someone_not_holding_parental_authority_does_not_count() -> None:
    c = consent(holders=(HOLDER_A, HOLDER_B), consented=frozenset({100, 555}))
    assert not c.complete
    assert c.missing == (HOLDER_B,)
    denied(may_tag(child(), [c], channel_children(child())), "consent_missing")


# What a viewer sees of a message


@pytest.mark.rule("V1")
def test_staff_see_everything_of_their_structure_withdrawn_included() -> None:
    for p in (staff(), admin()):
        assert sees(p, STRUCTURE, [CHILD], withdrawn=True)
        assert sees(p, STRUCTURE, [CHILD], withdrawn=False)


@pytest.mark.rule("V2")
def test_staff_of_another_structure_get_no_staff_view() -> None:
    assert not sees(staff(OTHER_STRUCTURE), STRUCTURE, [], withdrawn=True)


@pytest.mark.rule("V2", "V4")
def test_guardians_do_not_see_withdrawn_messages() -> None:
    assert sees(guardian(), STRUCTURE, [CHILD], withdrawn=False)
    assert not sees(guardian(), STRUCTURE, [CHILD], withdrawn=True)
    assert not sees(guardian(), STRUCTURE, [], withdrawn=True)


@pytest.mark.rule("V3", "V4")
def test_guardians_do_not_see_content_of_their_children_they_may_not_consult() -> None:
    p = guardian(consultation=False)
    assert not sees(p, STRUCTURE, [CHILD], withdrawn=False)
    assert not sees(p, STRUCTURE, [SIBLING, CHILD], withdrawn=False)
    # What does not tag that child stays visible.
    assert sees(p, STRUCTURE, [SIBLING], withdrawn=False)
    assert sees(p, STRUCTURE, [], withdrawn=False)


@pytest.mark.rule("V3")
def test_hidden_children_are_theirs_without_consultation() -> None:
    p = Principal(
        2,
        "Guardian",
        guardianships={
            CHILD: Guardianship(CHILD, True, consultation=False, may_post=True),
            SIBLING: Guardianship(SIBLING, False, consultation=True, may_post=False),
            OTHER_CHILD: Guardianship(OTHER_CHILD, False, consultation=False, may_post=False),
        },
    )
    assert p.hidden_children() == frozenset({CHILD, OTHER_CHILD})
    assert guardian().hidden_children() == frozenset()
    assert staff().hidden_children() == frozenset()


# Administration, consent state, consent signature


@pytest.mark.rule("M1", "M2")
def test_only_admins_of_the_structure_administer_it() -> None:
    assert may_administer(admin(), STRUCTURE) == ALLOW
    denied(may_administer(admin(OTHER_STRUCTURE), STRUCTURE), "forbidden")
    denied(may_administer(staff(), STRUCTURE), "forbidden")
    denied(may_administer(guardian(), STRUCTURE), "forbidden")
    denied(may_administer(member(), STRUCTURE), "forbidden")


@pytest.mark.rule("A1", "A2")
@pytest.mark.parametrize("rule", [may_administer, may_view_consents, may_moderate, may_edit_child])
def test_structure_rules_follow_the_account_state(rule: Callable[[Principal, int], Decision]) -> None:
    denied(rule(replace(admin(), disabled=True), STRUCTURE), "account_disabled")
    denied(rule(replace(admin(), terms_accepted=False), STRUCTURE), "terms_not_accepted")


@pytest.mark.rule("M3", "M4")
def test_staff_and_admins_view_consents_of_their_structure_only() -> None:
    assert may_view_consents(staff(), STRUCTURE) == ALLOW
    assert may_view_consents(admin(), STRUCTURE) == ALLOW
    denied(may_view_consents(staff(OTHER_STRUCTURE), STRUCTURE), "forbidden")
    denied(may_view_consents(guardian(), STRUCTURE), "forbidden")
    denied(may_view_consents(member(), STRUCTURE), "forbidden")


@pytest.mark.rule("D1", "D2", "D3")
def test_staff_correct_records_and_admins_change_enrolment() -> None:
    for who in (staff(), admin()):
        assert may_edit_child(who, STRUCTURE) == ALLOW
        assert may_edit_child(who, STRUCTURE, ("first_name", "last_name", "birth_date")) == ALLOW
    for field in ("group_id", "enrolled_on", "left_on"):
        assert may_edit_child(admin(), STRUCTURE, ("first_name", field)) == ALLOW
        denied(may_edit_child(staff(), STRUCTURE, ("first_name", field)), "forbidden")
    for who in (staff(OTHER_STRUCTURE), admin(OTHER_STRUCTURE), guardian(), member()):
        denied(may_edit_child(who, STRUCTURE, ("first_name",)), "forbidden")


@pytest.mark.rule("C5", "C6")
def test_staff_and_admins_moderate_their_structure_only() -> None:
    assert may_moderate(staff(), STRUCTURE) == ALLOW
    assert may_moderate(admin(), STRUCTURE) == ALLOW
    denied(may_moderate(staff(OTHER_STRUCTURE), STRUCTURE), "forbidden")
    denied(may_moderate(guardian(), STRUCTURE), "forbidden")


@pytest.mark.rule("C1", "C2", "C3")
def test_a_message_is_reported_by_whoever_sees_it() -> None:
    assert may_report(guardian(), FAMILY_CHANNEL, family(), (CHILD,), False) == ALLOW
    assert may_report(staff(), FAMILY_CHANNEL, family(), (), False) == ALLOW
    # The channel's refusal comes first: nothing is learnt of the message.
    denied(may_report(guardian(household=OTHER_FAMILY), FAMILY_CHANNEL, family(), (), False), "forbidden")
    denied(may_report(guardian(consultation=False), FAMILY_CHANNEL, family(), (CHILD,), False), "not_found")
    denied(may_report(guardian(), FAMILY_CHANNEL, family(), (), True), "not_found")
    denied(may_report(staff(), FAMILY_CHANNEL, family(), (), True), "not_found")


@pytest.mark.rule("U2")
@pytest.mark.parametrize("rule", [may_administer, may_view_consents, may_moderate, may_edit_child])
def test_an_unknown_structure_is_refused_like_another(rule: Callable[[Principal, int], Decision]) -> None:
    # An id that names no structure is one the principal holds no role in: plain forbidden.
    unknown = 999_999
    everything = Principal(
        1,
        "Everything",
        staff_of=frozenset({STRUCTURE}),
        admin_of=frozenset({STRUCTURE}),
        member_of=frozenset({STRUCTURE}),
    )
    assert rule(everything, STRUCTURE) == ALLOW
    denied(rule(everything, unknown), "forbidden")
    assert rule(everything, unknown) == rule(everything, OTHER_STRUCTURE)


@pytest.mark.rule("M5", "M6", "A1", "A2")
def test_only_a_holder_of_parental_authority_signs_consent() -> None:
    assert may_sign_consent(guardian(), CHILD) == ALLOW
    # Consultation is not needed to sign: parental authority is.
    assert may_sign_consent(guardian(consultation=False), CHILD) == ALLOW
    without_authority = Principal(2, "G", guardianships={CHILD: Guardianship(CHILD, False, True, True)})
    denied(may_sign_consent(without_authority, CHILD), "forbidden")
    denied(may_sign_consent(guardian(), OTHER_CHILD), "forbidden")
    denied(may_sign_consent(staff(), CHILD), "forbidden")
    denied(may_sign_consent(admin(), CHILD), "forbidden")
    denied(may_sign_consent(guardian(disabled=True), CHILD), "account_disabled")
    denied(may_sign_consent(guardian(terms_accepted=False), CHILD), "terms_not_accepted")


# Property: over random structures, a guardian gets nothing that is not theirs


@dataclass(frozen=True)
class World:
    families: dict[int, FamilyFacts]
    children: dict[int, ChildFacts]
    groups: dict[int, GroupFacts]
    consents: dict[int, ChildConsent]
    guardians: list[Principal]

    def all_facts(self) -> list[tuple[Channel, ChannelFacts]]:
        found: list[tuple[Channel, ChannelFacts]] = [
            (Channel(ChannelKind.STRUCTURE, s), StructureFacts(s)) for s in WORLD_STRUCTURES
        ]
        found += [(Channel(ChannelKind.FAMILY, f.id), f) for f in self.families.values()]
        found += [(Channel(ChannelKind.CHILD, c.id), c) for c in self.children.values()]
        found += [(Channel(ChannelKind.GROUP, g.id), g) for g in self.groups.values()]
        found += [(Channel(ChannelKind.USER, p.user_id), UserFacts(p.user_id)) for p in self.guardians]
        found += [(Channel(kind, 999_999), None) for kind in ChannelKind]
        return found

    def circle(self, facts: ChannelFacts) -> Collection[int]:
        if isinstance(facts, StructureFacts):
            return channel_children(facts, {c.id for c in self.children.values() if c.structure_id == facts.id})
        return channel_children(facts)


WORLD_STRUCTURES = (1, 2)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    child_structure = draw(st.lists(st.sampled_from(WORLD_STRUCTURES), min_size=1, max_size=6))
    children = {100 + i: ChildFacts(100 + i, s) for i, s in enumerate(child_structure)}
    group_structure = draw(st.lists(st.sampled_from(WORLD_STRUCTURES), min_size=0, max_size=4))
    group_of = {
        c.id: draw(st.sampled_from([None, *[200 + i for i, s in enumerate(group_structure) if s == c.structure_id]]))
        for c in children.values()
    }
    groups = {
        200 + i: GroupFacts(200 + i, s, frozenset(c for c, g in group_of.items() if g == 200 + i))
        for i, s in enumerate(group_structure)
    }
    families: dict[int, FamilyFacts] = {}
    for i, s in enumerate(draw(st.lists(st.sampled_from(WORLD_STRUCTURES), min_size=1, max_size=4))):
        own = sorted(c.id for c in children.values() if c.structure_id == s)
        kids = draw(st.frozensets(st.sampled_from(own), max_size=3)) if own else frozenset()
        families[300 + i] = FamilyFacts(300 + i, s, draw(st.booleans()), kids)
    flags = st.builds(lambda *f: f, st.booleans(), st.booleans(), st.booleans())
    guardians: list[Principal] = []
    for user_id in range(1, draw(st.integers(1, 4)) + 1):
        mine = draw(st.dictionaries(st.sampled_from(sorted(children)), flags, max_size=3))
        households = draw(st.frozensets(st.sampled_from(sorted(families)), max_size=2))
        structures = {children[c].structure_id for c in mine} | {families[f].structure_id for f in households}
        guardians.append(
            Principal(
                user_id,
                f"Guardian {user_id}",
                member_of=frozenset(structures),
                households=households,
                guardianships={c: Guardianship(c, *f) for c, f in mine.items()},
            )
        )
    consents: dict[int, ChildConsent] = {}
    for c in children.values():
        holders = tuple(
            Holder(p.user_id, p.name) for p in guardians if (g := p.guardianships.get(c.id)) and g.parental_authority
        )
        consented = draw(st.frozensets(st.sampled_from([h.user_id for h in holders] + [99]), max_size=3))
        consents[c.id] = ChildConsent(c.id, c.structure_id, f"Child {c.id}", holders, consented)
    return World(families, children, groups, consents, guardians)


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_no_guardian_is_ever_allowed_what_is_not_theirs(world: World) -> None:
    for p in world.guardians:
        for channel, facts in world.all_facts():
            subscribe = may_subscribe(p, channel, facts)
            publish = may_publish(p, channel, facts)
            for decision in (subscribe, publish):
                if not decision.allowed:
                    assert decision.code in {"forbidden", "consultation_not_authorised", "posting_not_authorised"}
                    continue
                assert facts is not None
                if isinstance(facts, UserFacts):
                    assert facts.id == p.user_id
                else:
                    # Never another structure's channel.
                    assert structure_of(facts) in p.member_of, (p, channel)
            if subscribe.allowed and isinstance(facts, FamilyFacts):
                assert facts.id in p.households
            if subscribe.allowed and isinstance(facts, ChildFacts):
                assert facts.id in p.guardianships
                assert p.guardianships[facts.id].consultation
            if subscribe.allowed and isinstance(facts, GroupFacts):
                assert facts.child_ids & set(p.guardianships)
            if publish.allowed:
                assert isinstance(facts, FamilyFacts)
                assert facts.id in p.households
                assert facts.guardians_may_post
                assert any(p.guardianships[c].may_post for c in facts.child_ids & set(p.guardianships))
            # What is theirs is never refused to them (the policy is not vacuous).
            if isinstance(facts, FamilyFacts) and facts.id in p.households:
                assert subscribe.allowed
            if isinstance(facts, ChildFacts) and facts.id in p.guardianships:
                if p.guardianships[facts.id].consultation:
                    assert subscribe == ALLOW
                else:
                    assert subscribe.code == "consultation_not_authorised"
            if isinstance(facts, UserFacts) and facts.id == p.user_id:
                assert subscribe.allowed


@pytest.mark.rule("T1", "T2", "T3", "T4")
@settings(max_examples=300, deadline=None)
@given(worlds(), st.data())
def test_may_tag_never_allows_a_child_without_complete_consent(world: World, data: st.DataObject) -> None:
    channel, facts = data.draw(st.sampled_from(world.all_facts()))
    tagged = data.draw(st.lists(st.sampled_from(sorted(world.consents)), max_size=4, unique=True))
    consents = [world.consents[c] for c in tagged]
    circle = world.circle(facts)
    decision = may_tag(facts, consents, circle)
    inside = all(c.child_id in circle and c.structure_id == structure_of(facts) for c in consents)
    complete = all(c.holders and {h.user_id for h in c.holders} <= c.consented for c in consents)
    assert decision.allowed == (inside and complete), (channel, tagged, decision)
    if inside and not complete:
        assert decision.code == "consent_missing"
        named = {d["child"]["id"] for d in decision.details}  # type: ignore[index]
        assert named == {c.child_id for c in consents if not c.complete}


@pytest.mark.rule("V2", "V3", "V4")
@settings(max_examples=200, deadline=None)
@given(worlds(), st.data())
def test_a_guardian_never_sees_what_tags_a_child_they_may_not_consult(world: World, data: st.DataObject) -> None:
    p = data.draw(st.sampled_from(world.guardians))
    tagged = data.draw(st.lists(st.sampled_from(sorted(world.children)), max_size=3, unique=True))
    withdrawn = data.draw(st.booleans())
    visible = sees(p, data.draw(st.sampled_from(WORLD_STRUCTURES)), tagged, withdrawn)
    hidden = {c for c in tagged if c in p.guardianships and not p.guardianships[c].consultation}
    assert visible == (not withdrawn and not hidden)


@pytest.mark.rule("P7")
def test_staff_withdraw_any_message_of_their_structure_and_authors_their_own() -> None:
    facts = FamilyFacts(1, STRUCTURE, False, frozenset({5}))
    staff = Principal(1, "Staff", staff_of=frozenset({STRUCTURE}))
    author = Principal(2, "Parent", households=frozenset({1}))
    other = Principal(3, "Other parent", households=frozenset({1}))
    elsewhere = Principal(4, "Other staff", staff_of=frozenset({OTHER_STRUCTURE}))
    assert may_withdraw(staff, facts, author_id=2).allowed
    assert may_withdraw(author, facts, author_id=2).allowed
    assert may_withdraw(other, facts, author_id=2) == FORBIDDEN
    assert may_withdraw(elsewhere, facts, author_id=2) == FORBIDDEN
    assert may_withdraw(author, None, author_id=2) == FORBIDDEN
    assert may_withdraw(Principal(2, "Parent", disabled=True), facts, author_id=2).code == "account_disabled"


@pytest.mark.rule("P8")
def test_announcements_go_to_groups_and_the_structure_only() -> None:
    body = {"kind": "announcement", "title": "Fermeture", "text": "Vendredi"}
    staff = Principal(1, "Staff", staff_of=frozenset({STRUCTURE}))
    assert may_post_kind(staff, GroupFacts(1, STRUCTURE, frozenset()), body).allowed
    assert may_post_kind(staff, StructureFacts(STRUCTURE), body).allowed
    for facts in (FamilyFacts(FAMILY, STRUCTURE, True, frozenset({CHILD})), ChildFacts(CHILD, STRUCTURE)):
        assert may_post_kind(staff, facts, body).code == "kind_not_allowed"
    assert may_post_kind(staff, ChildFacts(CHILD, STRUCTURE), {"kind": "text", "text": "x"}).allowed


@pytest.mark.rule("P9")
def test_a_daily_report_goes_by_staff_to_its_childs_channel_or_household() -> None:
    body = {"kind": "daily_report", "child": CHILD, "date": "2026-11-25"}
    staff = Principal(1, "Staff", staff_of=frozenset({STRUCTURE}))
    household = FamilyFacts(FAMILY, STRUCTURE, True, frozenset({CHILD}))
    assert may_post_kind(staff, ChildFacts(CHILD, STRUCTURE), body).allowed
    assert may_post_kind(staff, household, body).allowed
    assert may_post_kind(staff, ChildFacts(SIBLING, STRUCTURE), body).code == "kind_not_allowed"
    assert may_post_kind(staff, FamilyFacts(OTHER_FAMILY, STRUCTURE, True, frozenset({SIBLING})), body).code == (
        "kind_not_allowed"
    )
    assert may_post_kind(staff, GroupFacts(1, STRUCTURE, frozenset({CHILD})), body).code == "kind_not_allowed"
    parent = Principal(2, "Parent", households=frozenset({FAMILY}))
    assert may_post_kind(parent, household, body) == FORBIDDEN
    elsewhere = Principal(3, "Other staff", staff_of=frozenset({OTHER_STRUCTURE}))
    assert may_post_kind(elsewhere, household, body) == FORBIDDEN
