"""Who may upload, publish and view media: the pure policy, one case per row (docs/permissions.md, F-rows)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from realtime.permissions import (
    ALLOW,
    FORBIDDEN,
    ChildConsent,
    Decision,
    Holder,
    MediaItem,
    MediaView,
    may_attach_media,
    may_upload_media,
    may_view_media,
)
from tests.test_permissions import CHILD, OTHER_STRUCTURE, STRUCTURE, denied, family, guardian, staff

STAFF = staff()
PARENT = guardian()
MEDIA_ID = "0b9c5a8e-2f4c-4d3e-9a1b-3c5d7e9f1a2b"


def item(**changes: Any) -> MediaItem:
    return replace(MediaItem(MEDIA_ID, STRUCTURE, STAFF.user_id, "ready", taken=False), **changes)


def consent(*, complete: bool = True, child: int = CHILD) -> ChildConsent:
    holders = (Holder(2, "Guardian"), Holder(5, "Other holder"))
    return ChildConsent(child, STRUCTURE, "Léa Martin", holders, frozenset({2, 5} if complete else {2}))


def published(**changes: Any) -> MediaView:
    view = MediaView(STRUCTURE, STAFF.user_id, published=True, withdrawn=False, tagged=(consent(),))
    return replace(view, **changes)


@pytest.mark.rule("F1")
def test_staff_upload_for_their_structure() -> None:
    assert may_upload_media(STAFF, STRUCTURE) == ALLOW


@pytest.mark.rule("F3")
def test_nobody_else_uploads_without_a_channel() -> None:
    assert may_upload_media(PARENT, STRUCTURE) == FORBIDDEN
    assert may_upload_media(staff(OTHER_STRUCTURE), STRUCTURE) == FORBIDDEN
    denied(may_upload_media(staff(disabled=True), STRUCTURE), "account_disabled")
    denied(may_upload_media(staff(terms_accepted=False), STRUCTURE), "terms_not_accepted")


def attach(items: list[MediaItem | None], *, tagged: bool = True, confirmed: bool = False) -> Decision:
    return may_attach_media(STAFF, family(), items, tagged=tagged, confirmed=confirmed)


@pytest.mark.rule("F4")
def test_only_ones_own_upload_for_the_channels_structure_can_be_published() -> None:
    assert attach([item()]) == ALLOW
    for unusable in (None, item(uploader_id=99), item(uploader_id=None), item(structure_id=OTHER_STRUCTURE)):
        denied(attach([item(), unusable]), "not_found")


@pytest.mark.rule("F5")
def test_media_must_be_ready_and_in_no_other_message() -> None:
    denied(attach([item(state="processing")]), "media_not_ready")
    denied(attach([item(state="rejected")]), "media_rejected")
    denied(attach([item(taken=True)]), "media_already_published")


@pytest.mark.rule("F6")
def test_children_are_tagged_or_no_child_is_identifiable() -> None:
    assert attach([item()], tagged=True) == ALLOW
    assert attach([item()], tagged=False, confirmed=True) == ALLOW
    denied(attach([item()], tagged=False, confirmed=False), "tags_required")


@pytest.mark.rule("F7")
def test_uploader_and_staff_always_see() -> None:
    hidden = published(published=False, withdrawn=True, tagged=(consent(complete=False),))
    assert may_view_media(STAFF, hidden, FORBIDDEN) == ALLOW
    assert may_view_media(staff(), replace(hidden, uploader_id=99), FORBIDDEN) == ALLOW
    assert may_view_media(PARENT, replace(hidden, uploader_id=PARENT.user_id), FORBIDDEN) == ALLOW
    denied(may_view_media(staff(disabled=True), hidden, ALLOW), "account_disabled")


@pytest.mark.rule("F8")
def test_others_see_nothing_unpublished_outside_their_channels_or_of_a_hidden_child() -> None:
    denied(may_view_media(PARENT, published(published=False), ALLOW), "not_found")
    denied(may_view_media(PARENT, published(), FORBIDDEN), "not_found")
    denied(may_view_media(replace(staff(OTHER_STRUCTURE), user_id=7), published(), FORBIDDEN), "not_found")
    denied(may_view_media(guardian(consultation=False), published(), ALLOW), "not_found")


@pytest.mark.rule("F9")
def test_a_withdrawn_message_takes_its_media_away() -> None:
    denied(may_view_media(PARENT, published(withdrawn=True), ALLOW), "media_withdrawn")


@pytest.mark.rule("F10")
def test_consent_is_read_at_each_view() -> None:
    denied(may_view_media(PARENT, published(tagged=(consent(complete=False),)), ALLOW), "consent_missing")


@pytest.mark.rule("F11")
def test_a_guardian_of_the_channel_sees_published_media() -> None:
    assert may_view_media(PARENT, published(), ALLOW) == ALLOW
    assert may_view_media(PARENT, published(tagged=()), ALLOW) == ALLOW
