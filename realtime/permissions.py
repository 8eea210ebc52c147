"""Who may subscribe to, publish on and read each channel, and which messages each viewer
sees: a pure policy over facts. The rules, one per row, are in docs/permissions.md.

No I/O here: `realtime.directory` loads the facts; the gateway and the HTTP API ask these
functions. Denied by default: every rule that is not met, and every case without a rule,
is a refusal with a stable code.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from realtime.channels import Channel, ChannelKind
from realtime.errors import Forbidden, Gone, NotFound, ProcrecheError


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
    member_of: frozenset[int] = frozenset()  # structures where the user has any role
    households: frozenset[int] = frozenset()
    guardianships: Mapping[int, Guardianship] = field(default_factory=dict)

    def hidden_children(self) -> frozenset[int]:
        """Children whose content this user must not receive: theirs, without consultation."""
        return frozenset(c for c, g in self.guardianships.items() if not g.consultation)


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


@dataclass(frozen=True, slots=True)
class GroupFacts:
    id: int
    structure_id: int
    child_ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class StructureFacts:
    id: int


@dataclass(frozen=True, slots=True)
class UserFacts:
    id: int


# None: the id does not exist. It is refused exactly like another household's id, so that
# ids cannot be probed.
ChannelFacts = FamilyFacts | ChildFacts | GroupFacts | StructureFacts | UserFacts | None


@dataclass(frozen=True, slots=True)
class Holder:
    user_id: int
    name: str


@dataclass(frozen=True, slots=True)
class ChildConsent:
    """A child's publication consent: who holds parental authority, who has consented."""

    child_id: int
    structure_id: int
    name: str
    holders: tuple[Holder, ...]
    consented: frozenset[int]

    @property
    def missing(self) -> tuple[Holder, ...]:
        return tuple(h for h in self.holders if h.user_id not in self.consented)

    @property
    def complete(self) -> bool:
        # No recorded holder of parental authority: nobody could have consented.
        return bool(self.holders) and not self.missing


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    code: str = ""
    reason: str = ""
    details: tuple[dict[str, object], ...] = ()


ALLOW = Decision(True)


def deny(code: str, reason: str, details: tuple[dict[str, object], ...] = ()) -> Decision:
    return Decision(False, code, reason, details)


FORBIDDEN = deny("forbidden", "you may not use this channel")


def refusal(decision: Decision) -> ProcrecheError:
    """The error a refused decision answers: not found, gone, or forbidden."""
    if decision.code == "not_found":
        return NotFound(decision.reason, code="not_found")
    if decision.code == "media_withdrawn":
        return Gone(decision.reason, code=decision.code)
    return Forbidden(decision.reason, code=decision.code, details=decision.details)


def account(p: Principal) -> Decision:
    if p.disabled:
        return deny("account_disabled", "this account is disabled")
    if not p.terms_accepted:
        return deny("terms_not_accepted", "the current terms of use must be accepted first")
    return ALLOW


def _matches(channel: Channel, facts: ChannelFacts) -> bool:
    expected = {
        ChannelKind.FAMILY: FamilyFacts,
        ChannelKind.CHILD: ChildFacts,
        ChannelKind.GROUP: GroupFacts,
        ChannelKind.STRUCTURE: StructureFacts,
        ChannelKind.USER: UserFacts,
    }[channel.kind]
    return facts is not None and isinstance(facts, expected) and facts.id == channel.id


def structure_of(facts: ChannelFacts) -> int | None:
    if isinstance(facts, FamilyFacts | ChildFacts | GroupFacts):
        return facts.structure_id
    if isinstance(facts, StructureFacts):
        return facts.id
    return None


def may_subscribe(p: Principal, channel: Channel, facts: ChannelFacts) -> Decision:
    if not (verdict := account(p)).allowed:
        return verdict
    if not _matches(channel, facts):
        return FORBIDDEN
    if isinstance(facts, UserFacts):
        return ALLOW if facts.id == p.user_id else FORBIDDEN
    if structure_of(facts) in p.staff_of:
        return ALLOW
    if isinstance(facts, StructureFacts):
        return ALLOW if facts.id in p.member_of else FORBIDDEN
    if isinstance(facts, GroupFacts):
        return ALLOW if facts.child_ids & p.guardianships.keys() else FORBIDDEN
    if isinstance(facts, FamilyFacts):
        return ALLOW if facts.id in p.households else FORBIDDEN
    if isinstance(facts, ChildFacts):
        guardianship = p.guardianships.get(facts.id)
        if guardianship is None:
            return FORBIDDEN
        if not guardianship.consultation:
            return deny("consultation_not_authorised", "you are not authorised to consult this child's content")
        return ALLOW
    return FORBIDDEN


def may_publish(p: Principal, channel: Channel, facts: ChannelFacts) -> Decision:
    """May `p` publish on `channel` at all (before looking at what the message tags)."""
    if not (verdict := account(p)).allowed:
        return verdict
    if not _matches(channel, facts) or isinstance(facts, UserFacts):
        # user:<id> carries the server's own notifications only.
        return FORBIDDEN
    if structure_of(facts) in p.staff_of:
        return ALLOW
    if isinstance(facts, FamilyFacts) and facts.id in p.households:
        may_post = any(g.may_post for child, g in p.guardianships.items() if child in facts.child_ids)
        if facts.guardians_may_post and may_post:
            return ALLOW
        return deny("posting_not_authorised", "the structure has not authorised you to post here")
    return FORBIDDEN


def may_post_kind(p: Principal, facts: ChannelFacts, body: Mapping[str, object]) -> Decision:
    """Where each kind of body may go (after `may_publish`): announcements to a group or the
    structure; a child's daily report, by staff, to that child's channel or one of their
    households; text anywhere."""
    kind = body.get("kind")
    if kind == "announcement":
        if isinstance(facts, GroupFacts | StructureFacts):
            return ALLOW
        return deny("kind_not_allowed", "announcements go to a group or the whole structure")
    if kind == "daily_report":
        if structure_of(facts) not in p.staff_of:
            return FORBIDDEN
        child = body.get("child")
        if (isinstance(facts, ChildFacts) and facts.id == child) or (
            isinstance(facts, FamilyFacts) and child in facts.child_ids
        ):
            return ALLOW
        return deny("kind_not_allowed", "a daily report goes to its child's channel or one of their households")
    return ALLOW


def may_see_receipts(p: Principal, channel: Channel, facts: ChannelFacts) -> Decision:
    """In a household conversation each side sees the other's read position; elsewhere
    (announcements, a child's feed) only staff see who has read what."""
    if not (verdict := may_subscribe(p, channel, facts)).allowed:
        return verdict
    if isinstance(facts, FamilyFacts) or structure_of(facts) in p.staff_of:
        return ALLOW
    return FORBIDDEN


def household_only(channel: Channel, facts: ChannelFacts) -> Decision:
    """Typing indicators and presence exist in household conversations only."""
    if isinstance(facts, FamilyFacts) and _matches(channel, facts):
        return ALLOW
    return deny("kind_not_allowed", "typing and presence exist in household channels only")


def may_withdraw(p: Principal, facts: ChannelFacts, author_id: int) -> Decision:
    """Staff withdraw any message of their structure (moderation); anyone withdraws what
    they wrote themselves. Others: refused."""
    if not (verdict := account(p)).allowed:
        return verdict
    if structure_of(facts) in p.staff_of or (facts is not None and author_id == p.user_id):
        return ALLOW
    return FORBIDDEN


def channel_children(facts: ChannelFacts, structure_children: Collection[int] = ()) -> Collection[int]:
    """The children a message on this channel may tag: the channel's own circle."""
    if isinstance(facts, ChildFacts):
        return (facts.id,)
    if isinstance(facts, FamilyFacts | GroupFacts):
        return facts.child_ids
    if isinstance(facts, StructureFacts):
        return structure_children
    return ()


def may_tag(facts: ChannelFacts, tagged: Collection[ChildConsent], circle: Collection[int]) -> Decision:
    """Image rights: every tagged child belongs to the channel's circle and has publication
    consent from every holder of parental authority. The refusal names whose is missing."""
    structure = structure_of(facts)
    outside = [c.child_id for c in tagged if c.child_id not in circle or c.structure_id != structure]
    if outside:
        return deny("forbidden", "a tagged child is not part of this channel's circle")
    lacking = [c for c in tagged if not c.complete]
    if not lacking:
        return ALLOW
    details: tuple[dict[str, object], ...] = tuple(
        {
            "child": {"id": c.child_id, "name": c.name},
            "missing": [{"id": h.user_id, "name": h.name} for h in c.missing],
        }
        for c in lacking
    )
    names = "; ".join(
        f"{c.name}: "
        + (", ".join(h.name for h in c.missing) if c.holders else "no holder of parental authority recorded")
        for c in lacking
    )
    return deny("consent_missing", f"publication consent missing for {names}", details)


def sees(p: Principal, structure_id: int | None, tagged: Collection[int], withdrawn: bool) -> bool:
    """Whether `p` may see a message (tagging `tagged`) of a channel of `structure_id`.
    Staff see everything of their structure, withdrawn messages marked as such; guardians
    see neither withdrawn messages nor content of their children they may not consult."""
    if structure_id in p.staff_of:
        return True
    if withdrawn:
        return False
    return not (p.hidden_children() & set(tagged))


def may_administer(p: Principal, structure_id: int) -> Decision:
    if not (verdict := account(p)).allowed:
        return verdict
    return ALLOW if structure_id in p.admin_of else FORBIDDEN


def may_export(p: Principal, scope: str, structure_id: int | None) -> Decision:
    """Portability: anyone exports their own data (`me`); a child's, a household's or a
    whole structure's data, only an admin of that structure. `structure_id` is None for an
    unknown child, household or structure: refused like another structure's, so that ids
    cannot be probed."""
    if not (verdict := account(p)).allowed:
        return verdict
    if scope == "me":
        return ALLOW
    if scope in ("child", "household", "structure") and structure_id is not None:
        return may_administer(p, structure_id)
    return FORBIDDEN


def _staff_only(p: Principal, structure_id: int) -> Decision:
    if not (verdict := account(p)).allowed:
        return verdict
    return ALLOW if structure_id in p.staff_of else FORBIDDEN


def may_view_consents(p: Principal, structure_id: int) -> Decision:
    """Staff see each child's consent state (who has and who has not consented)."""
    return _staff_only(p, structure_id)


# What staff keep up to date on a child's record; the group and the enrolment dates decide
# who sees the child's feed and when retention erases it, so only admins change them.
CHILD_RECORD_FIELDS = frozenset({"first_name", "last_name", "birth_date"})


def may_edit_child(p: Principal, structure_id: int, fields: Collection[str] = ()) -> Decision:
    """Rectification of a child's record: staff read the children of their structure and
    correct names and birth dates; admins change anything. With no fields: may they read
    and edit the records at all (asked before the body is read)."""
    if not (verdict := _staff_only(p, structure_id)).allowed:
        return verdict
    if structure_id in p.admin_of or set(fields) <= CHILD_RECORD_FIELDS:
        return ALLOW
    return deny("forbidden", "only an admin changes a child's group or enrolment dates")


MESSAGE_NOT_FOUND = deny("not_found", "no such message in this channel")


def may_report(
    p: Principal, channel: Channel, facts: ChannelFacts, concerns: Collection[int], withdrawn: bool
) -> Decision:
    """Anyone reports a message they can see: the channel's subscribe rule, then the
    message's visibility. A message they cannot see is unknown to them."""
    if not (verdict := may_subscribe(p, channel, facts)).allowed:
        return verdict
    if withdrawn or not sees(p, structure_of(facts), concerns, withdrawn):
        return MESSAGE_NOT_FOUND
    return ALLOW


def may_moderate(p: Principal, structure_id: int) -> Decision:
    """Staff of a structure read its moderation queue, withdraw reported messages and
    dismiss reports."""
    return _staff_only(p, structure_id)


def may_sign_consent(p: Principal, child_id: int) -> Decision:
    """Only a holder of parental authority signs or revokes a child's publication consent."""
    if not (verdict := account(p)).allowed:
        return verdict
    guardianship = p.guardianships.get(child_id)
    if guardianship is None or not guardianship.parental_authority:
        return FORBIDDEN
    return ALLOW


@dataclass(frozen=True, slots=True)
class MediaItem:
    """A media a publish refers to, as the library holds it."""

    id: str
    structure_id: int
    uploader_id: int | None
    state: str  # processing | ready | rejected
    # Reserved by another publish (another channel or msg_id): a media shows in one message.
    taken: bool


@dataclass(frozen=True, slots=True)
class MediaView:
    """What the policy needs to decide who sees a media (consents read at that moment)."""

    structure_id: int
    uploader_id: int | None
    published: bool  # its message exists
    withdrawn: bool  # its message was withdrawn
    tagged: tuple[ChildConsent, ...]


MEDIA_NOT_FOUND = deny("not_found", "no such media")


def may_upload_media(p: Principal, structure_id: int) -> Decision:
    """Staff upload for their structure; guardians only for a channel they may publish on
    (`may_publish`, asked by the caller with the channel)."""
    if not (verdict := account(p)).allowed:
        return verdict
    return ALLOW if structure_id in p.staff_of else FORBIDDEN


def may_attach_media(
    p: Principal, facts: ChannelFacts, items: Collection[MediaItem | None], *, tagged: bool, confirmed: bool
) -> Decision:
    """A media message (after `may_publish`): each media is the publisher's own upload for
    the channel's structure, processed, and in no other message; and it tags the children
    shown (then `may_tag`) or the publisher confirms that no child is identifiable."""
    structure = structure_of(facts)
    for item in items:
        # Unknown, someone else's, or another structure's: the same answer, so media ids
        # cannot be probed.
        if item is None or item.uploader_id != p.user_id or item.structure_id != structure:
            return MEDIA_NOT_FOUND
        if item.state == "rejected":
            return deny("media_rejected", f"media {item.id} was rejected when it was processed")
        if item.state != "ready":
            return deny("media_not_ready", f"media {item.id} is still being processed; publish it once ready")
        if item.taken:
            return deny("media_already_published", f"media {item.id} is already in another message")
    if not tagged and not confirmed:
        return deny(
            "tags_required", "tag the children shown, or confirm that no child is identifiable (no_child_identifiable)"
        )
    return ALLOW


def may_view_media(p: Principal, media: MediaView, channel: Decision) -> Decision:
    """Who sees a media file, decided at each request: its uploader and the structure's
    staff always; anyone else only through its published message, with the right to that
    message's channel (`channel`, from `may_subscribe`), while the message stands and every
    tagged child's consent is complete."""
    if not (verdict := account(p)).allowed:
        return verdict
    if media.uploader_id == p.user_id or media.structure_id in p.staff_of:
        return ALLOW
    if not media.published or not channel.allowed:
        return MEDIA_NOT_FOUND
    if p.hidden_children() & {c.child_id for c in media.tagged}:
        return MEDIA_NOT_FOUND
    if media.withdrawn:
        return deny("media_withdrawn", "this media was withdrawn")
    if not all(c.complete for c in media.tagged):
        return deny("consent_missing", "publication consent for a child shown is no longer complete")
    return ALLOW
