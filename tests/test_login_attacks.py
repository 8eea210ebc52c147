"""Attacks on login: guessing past the throttle (in parallel, on unknown accounts, through
variants of an address, across the window), telling accounts apart by the answer or by
its cost, and malformed credentials. What tests/test_accounts.py already covers (the limit
for one known and one unknown account, parallel guesses on a known one, the reset on
success, the same code and body for unknown and wrong) is not repeated.

Timing: the project forbids timed assertions. That an unknown account costs the same work
as a known one is checked structurally (the argon2 verifier runs exactly once, on a hash of
the same parameters, and nothing else is hashed); the latencies are only measured and
reported ("Login" in tests/figures.py), with no assertion on them at all."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher, extract_parameters

from realtime.passwords import Passwords
from realtime.settings import Settings
from tests import figures
from tests.conftest import DEMO_PASSWORD, Gateway, running_gateway, wait_for

pytestmark = pytest.mark.usefixtures("demo_families")

WRONG = "not-the-password-1"
INVITED = "invited@demo.test"  # an account whose invitation is not accepted yet: no password
DISABLED = "disabled@demo.test"


@dataclass
class Spy:
    """Records what the argon2 hasher behind realtime.passwords is asked to do."""

    real: PasswordHasher
    verified: list[str] = field(default_factory=list)
    hashed: int = 0

    def verify(self, hashed: str, password: str) -> bool:
        self.verified.append(hashed)
        return self.real.verify(hashed, password)

    def hash(self, password: str) -> str:
        self.hashed += 1
        return self.real.hash(password)

    def check_needs_rehash(self, hashed: str) -> bool:
        return self.real.check_needs_rehash(hashed)


@contextmanager
def spying(passwords: Passwords) -> Iterator[Spy]:
    real = passwords._hasher
    spy = Spy(real)
    passwords._hasher = spy  # type: ignore[assignment]
    try:
        yield spy
    finally:
        passwords._hasher = real


async def add_accounts(gateway: Gateway) -> None:
    pool = gateway.services.pool
    await pool.execute("INSERT INTO users (email, display_name) VALUES ($1, 'Invitée')", INVITED)
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE email = 'martin@demo.test'")
    await pool.execute(
        "INSERT INTO users (email, display_name, password_hash, disabled_at) VALUES ($1, 'Partie', $2, now())",
        DISABLED,
        stored,
    )


async def attempt(http: httpx.AsyncClient, email: str, password: str = WRONG) -> httpx.Response:
    return await http.post("/api/login", json={"email": email, "password": password})


def comparable(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Everything a client sees, but the date."""
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() != "date")
    return response.status_code, response.content, headers


async def test_unknown_wrong_passwordless_and_disabled_accounts_get_the_very_same_answer(gateway: Gateway) -> None:
    await add_accounts(gateway)
    answers = {email: await attempt(gateway.http, email) for email in ("nobody@demo.test", "martin@demo.test")}
    answers |= {email: await attempt(gateway.http, email) for email in (INVITED, DISABLED)}
    # Even the dummy hash's own password opens nothing.
    answers["invited-with-dummy"] = await attempt(gateway.http, INVITED, "procreche timing equaliser")
    first = comparable(answers["nobody@demo.test"])
    assert first[0] == 401
    for name, response in answers.items():
        assert comparable(response) == first, name
    # Once throttled, the same again.
    limit = gateway.services.settings.login_max_attempts
    throttled = {}
    for email in ("nobody@demo.test", "martin@demo.test", INVITED):
        for _ in range(limit):
            await attempt(gateway.http, email)
        throttled[email] = await attempt(gateway.http, email)
    first = comparable(throttled["nobody@demo.test"])
    assert first[0] == 429
    assert all(comparable(r) == first for r in throttled.values())
    figures.report("Login", same_answer_cases=len(answers) + len(throttled))


async def test_every_attempt_costs_one_argon2_verification_of_the_same_parameters(gateway: Gateway) -> None:
    """The verifier runs exactly once per attempt, whatever the account, on a hash of the
    real accounts' parameters; nothing is hashed on the way (a first unknown account used to
    cost a hash more, making the dummy). A throttled attempt costs none."""
    await add_accounts(gateway)
    pool = gateway.services.pool
    real_hash = await pool.fetchval("SELECT password_hash FROM users WHERE email = 'martin@demo.test'")
    with spying(gateway.services.accounts.passwords) as spy:
        verified: dict[str, str] = {}
        for email in ("nobody@demo.test", "martin@demo.test", INVITED, DISABLED, "other-nobody@demo.test"):
            before = len(spy.verified)
            assert (await attempt(gateway.http, email)).status_code == 401
            assert len(spy.verified) == before + 1, email
            verified[email] = spy.verified[-1]
        assert spy.hashed == 0
        limit = gateway.services.settings.login_max_attempts
        for _ in range(limit):
            await attempt(gateway.http, "throttled@demo.test")
        before = len(spy.verified)
        assert (await attempt(gateway.http, "throttled@demo.test")).status_code == 429
        assert len(spy.verified) == before
    assert verified["martin@demo.test"] == verified[DISABLED] == real_hash
    dummy = verified["nobody@demo.test"]
    assert verified[INVITED] == verified["other-nobody@demo.test"] == dummy != real_hash
    assert extract_parameters(dummy) == extract_parameters(real_hash)


async def test_parallel_guesses_on_an_unknown_account_cannot_exceed_the_limit(gateway: Gateway) -> None:
    limit = gateway.services.settings.login_max_attempts
    with spying(gateway.services.accounts.passwords) as spy:
        responses = await asyncio.gather(
            *(attempt(gateway.http, "ghost@demo.test", f"guess-{n:08d}") for n in range(limit * 4))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * limit + [429] * (limit * 3)
    assert len(spy.verified) == limit  # the refused ones cost no argon2
    figures.report("Login", parallel_attempts=len(responses), parallel_verified=len(spy.verified), limit=limit)


async def test_variants_of_an_address_share_one_counter(gateway: Gateway) -> None:
    limit = gateway.services.settings.login_max_attempts
    variants = [
        "martin@demo.test",
        "MARTIN@demo.test",
        " Martin@Demo.Test ",
        "martin@DEMO.TEST\t",
        "\nmartin@demo.test",
    ]
    for n in range(limit):
        assert (await attempt(gateway.http, variants[n % len(variants)])).status_code == 401
    for variant in variants:
        response = await attempt(gateway.http, variant, DEMO_PASSWORD)
        assert (response.status_code, response.json()["code"]) == (429, "too_many_attempts"), variant


async def test_the_window_is_fixed_from_the_first_attempt_then_the_account_is_free_again(settings: Settings) -> None:
    window = 2
    async with running_gateway(replace(settings, login_window_seconds=window, login_max_attempts=3)) as gateway:
        services = gateway.services
        key = services.keys.login_failures(hashlib.sha256(b"martin@demo.test").hexdigest())
        for _ in range(3):
            assert (await attempt(gateway.http, "martin@demo.test")).status_code == 401
        ttl_after_limit = await services.redis.pttl(key)
        assert 0 < ttl_after_limit <= window * 1000
        await asyncio.sleep(0.3)
        # Later attempts do not push the end of the window back.
        assert (await attempt(gateway.http, "martin@demo.test", DEMO_PASSWORD)).status_code == 429
        assert 0 < await services.redis.pttl(key) < ttl_after_limit

        async def logged_in() -> bool:
            return (await attempt(gateway.http, "martin@demo.test", DEMO_PASSWORD)).status_code == 200

        # A bounded wait for the window to end, not a timing assertion.
        await wait_for(logged_in, timeout=window * 10, interval=0.25)
        assert await services.redis.exists(key) == 0  # the success reset it


@pytest.mark.parametrize(
    "body",
    [
        b'{"email": "nob\\u0000ody@demo.test", "password": "x"}',
        b'{"email": "martin@demo.test\\u0000", "password": "x"}',
        b'{"email": "\\ud800nobody@demo.test", "password": "x"}',
        b'{"email": "martin@demo.test", "password": "\\ud800"}',
        b'{"email": "martin@demo.test", "password": "\\udfff\\ud800"}',
        b'{"email": "mar\\u200btin@demo.test", "password": "x"}',
        b'{"email": "martin@demo.test\\u0007", "password": "x"}',
        b'{"email": "martin@demo.test", "password": 12345678}',
        b'{"email": "martin@demo.test", "password": ""}',
        b'{"email": "martin@demo.test"}',
        b'{"email": ["martin@demo.test"], "password": "x"}',
        b'{"email": "' + b"a" * 300 + b'@demo.test", "password": "x"}',
        b'{"email": "martin@demo.test", "password": "' + b"p" * 1025 + b'"}',
    ],
    ids=[
        "nul-in-email",
        "nul-after-email",
        "lone-surrogate-email",
        "lone-surrogate-password",
        "reversed-surrogates",
        "zero-width-space",
        "bell",
        "number-password",
        "empty-password",
        "no-password",
        "list-email",
        "long-email",
        "long-password",
    ],
)
async def test_malformed_credentials_are_a_bad_request_not_a_server_error(gateway: Gateway, body: bytes) -> None:
    response = await gateway.http.post("/api/login", content=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (400, "bad_request"), response.text


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


async def test_measure_the_latency_of_unknown_and_known_accounts(settings: Settings) -> None:
    """Measured, reported, not asserted (see the module docstring): N attempts each, known
    account with a wrong password and unknown accounts, interleaved so that the machine's
    load weighs on both alike. A warm-up first: connections, caches, the first argon2."""
    rounds = 30
    async with running_gateway(replace(settings, login_max_attempts=10 * rounds)) as gateway:
        for email in ("martin@demo.test", "warm-up@demo.test"):
            await attempt(gateway.http, email)
        latencies: dict[str, list[float]] = {"known_wrong": [], "unknown": []}
        for n in range(rounds):
            pair = [("known_wrong", "martin@demo.test"), ("unknown", f"nobody-{n}@demo.test")]
            for kind, email in pair if n % 2 else reversed(pair):
                start = time.perf_counter()
                response = await attempt(gateway.http, email)
                latencies[kind].append(time.perf_counter() - start)
                assert response.status_code == 401
    known, unknown = median_ms(latencies["known_wrong"]), median_ms(latencies["unknown"])
    result: dict[str, Any] = {
        "samples_each": rounds,
        "known_wrong_median_ms": known,
        "unknown_median_ms": unknown,
        "unknown_to_known_ratio": round(unknown / known, 3),
        "timing_assertion": "none",
    }
    figures.report("Login", **result)
