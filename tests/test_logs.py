"""Logs, in both formats: one JSON object per line when asked, and never a message's text, a
password, a session or invitation token, or a file link's signature — on a gateway in this
process (login, invitation, media link, publish), and on `procreche serve` as an operator
runs it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from realtime import logs
from realtime.client import Client, ReplyError
from realtime.settings import Settings, SettingsError
from tests.conftest import DEMO_PASSWORD, Gateway, bearer, media_worker, wait_for
from tests.processes import CLI, HOST, free_port, procreche_env, terminate
from tests.test_admin_api import Demo, d
from tests.test_invitations import invite, new_staff, token_of
from tests.test_media_api import ready_photo

__all__ = ["d"]  # the administration tests' fixture

SECRET_TEXT = "Léa a dit son premier mot: papillon-SECRET-7361"
WRONG_PASSWORD = "wrong-password-SECRET-4417"
NEW_PASSWORD = "a-long-new-password-SECRET-42"
JSON_KEYS = {"time", "level", "logger", "message"}
# What the test's own clients log (httpx names every URL it requests): not the server's.
CLIENT_LOGGERS = ("httpx", "httpcore", "websockets.client")


def test_redaction_rules() -> None:
    cases = {
        '1.2.3.4:5 - "GET /media/files/s1/ab/screen.jpg?expires=17&signature=c0ffee HTTP/1.1" 200': (
            '1.2.3.4:5 - "GET /media/files/s1/ab/screen.jpg HTTP/1.1" 200'
        ),
        '"POST /api/invitations/Zx9-secret_token HTTP/1.1" 200': '"POST /api/invitations/<redacted> HTTP/1.1" 200',
        "GET /api/invitations/tok?x=1": "GET /api/invitations/<redacted>",
        "link https://app.example/#/invite/abc123 sent": "link https://app.example/#/invite/<redacted> sent",
        "https://s3.example/bucket/k?X-Amz-Signature=ff&X-Amz-Credential=a": "https://s3.example/bucket/k",
        "Authorization: Bearer abc.def": "Authorization: Bearer <redacted>",
        "media 0192 ready (image 640x480)": "media 0192 ready (image 640x480)",
        '"WebSocket /ws" [accepted]': '"WebSocket /ws" [accepted]',
    }
    for raw, redacted in cases.items():
        assert logs.redact(raw) == redacted


def test_every_record_is_redacted_whatever_its_arguments() -> None:
    stream = io.StringIO()
    handler = logs.handler("text", stream)
    logger = logging.getLogger("procreche.test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("request answered %s: %r", "unavailable", OSError("GET /api/invitations/tok9?a=b"))
        logger.warning("%(path)s refused", {"path": "/media/files/k?signature=ff"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = stream.getvalue()
    assert "/api/invitations/<redacted>" in text
    assert "/media/files/k refused" in text
    for secret in ("tok9", "a=b", "signature"):
        assert secret not in text


def test_the_json_format_is_one_object_per_line() -> None:
    stream = io.StringIO()
    handler = logs.handler("json", stream)
    logger = logging.getLogger("procreche.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("media %s: attempt %d\nfailed", "0192", 2, extra={"partition": 3})
        try:
            int("/api/invitations/tok123")
        except ValueError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["time"].endswith("Z")
    assert (first["level"], first["logger"], first["message"]) == (
        "WARNING",
        "procreche.test-json",
        "media 0192: attempt 2\nfailed",
    )
    assert first["partition"] == 3
    assert second["level"] == "ERROR"
    assert "/api/invitations/<redacted>" in second["exception"]
    assert "tok123" not in lines[1]


def test_the_log_format_setting() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"PROCRECHE_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(SettingsError, match="PROCRECHE_LOG_FORMAT"):
        Settings.from_env({"PROCRECHE_LOG_FORMAT": "xml"})


class NotClients(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(CLIENT_LOGGERS)


@pytest.fixture(params=logs.FORMATS)
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[logs.LogFormat, io.StringIO]]:
    """Every record of the servers in this process, at the production level, as the
    production handler writes it."""
    log_format: logs.LogFormat = request.param
    stream = io.StringIO()
    handler = logs.handler(log_format, stream)
    handler.addFilter(NotClients())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield log_format, stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def check_lines(text: str, log_format: logs.LogFormat) -> None:
    if log_format == "json":
        for line in text.splitlines():
            entry = json.loads(line)
            assert set(entry) >= JSON_KEYS, line


@pytest.mark.usefixtures("demo_families")
async def test_login_invitation_media_link_and_publish_leave_no_secret_in_the_logs(
    gateway: Gateway,
    d: Demo,
    demo_families: dict[str, int],
    tmp_path: Path,
    captured: tuple[logs.LogFormat, io.StringIO],
) -> None:
    log_format, stream = captured
    household = f"family:{demo_families['Famille Martin']}"
    # Logins, one of them refused.
    staff = await gateway.login("staff@demo.test")
    parent = await gateway.login("martin@demo.test")
    refused = await gateway.http.post("/api/login", json={"email": "staff@demo.test", "password": WRONG_PASSWORD})
    assert refused.status_code == 401
    # An invitation, looked at and accepted.
    invitation = token_of(await invite(gateway, d, await new_staff(gateway, d)))
    assert (await gateway.http.get(f"/api/invitations/{invitation}")).status_code == 200
    accepted = await gateway.http.post(f"/api/invitations/{invitation}", json={"password": NEW_PASSWORD})
    assert accepted.status_code == 200, accepted.text
    invited = accepted.json()["token"]
    # A photo's link, handed out and fetched.
    async with media_worker(gateway):
        media_id = await ready_photo(gateway, staff, tmp_path)
    view = await gateway.http.get(f"/api/media/{media_id}", params={"size": "screen"}, headers=bearer(staff))
    assert view.status_code == 302
    link = view.headers["location"]
    signature = parse_qs(urlsplit(link).query)["signature"][0]
    assert (await gateway.http.get(link)).status_code == 200
    # A message, published and delivered; and one refused.
    async with Client.connect(gateway.ws, staff) as sender, Client.connect(gateway.ws, parent) as receiver:
        await receiver.subscribe(household)
        await sender.publish(household, SECRET_TEXT)
        assert (await receiver.next_push())["body"]["text"] == SECRET_TEXT
        with pytest.raises(ReplyError):
            await receiver.publish("family:999999", SECRET_TEXT)

    text = stream.getvalue()
    for secret in (
        DEMO_PASSWORD,
        WRONG_PASSWORD,
        NEW_PASSWORD,
        staff,
        parent,
        d.admin,
        invited,
        invitation,
        signature,
        "signature=",
        SECRET_TEXT,
        "papillon",
    ):
        assert secret not in text, f"{secret!r} is in the {log_format} logs"
    # The requests were logged, secrets aside: the test looked at real log lines.
    assert "POST /api/login" in text
    assert "/api/invitations/<redacted>" in text
    assert f"/api/media/{media_id} HTTP" in text
    assert "/media/files/" in text
    assert '"WebSocket /ws" [accepted]' in text.replace('\\"', '"')
    check_lines(text, log_format)


async def read_lines(path: Path) -> list[str]:
    return await asyncio.to_thread(lambda: path.read_text().splitlines())


async def test_serve_writes_json_logs_without_secrets(settings: Settings, tmp_path: Path) -> None:
    """`procreche serve` with PROCRECHE_LOG_FORMAT=json: every line on stderr is a JSON
    object (stdout keeps the command's own messages), and none holds a secret."""
    port = free_port()
    env = procreche_env(settings, tmp_path, PROCRECHE_LOG_FORMAT="json")
    out_path, err_path = tmp_path / "stdout.log", tmp_path / "stderr.log"
    args = (*CLI, "serve", "--demo", "--host", HOST, "--port", str(port))
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = await asyncio.create_subprocess_exec(sys.executable, *args, env=env, stdout=out, stderr=err)
    try:
        base = f"http://{HOST}:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:

            async def healthy() -> bool:
                assert process.returncode is None, err_path.read_text()
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(healthy, timeout=90, interval=0.2)
            login = await http.post("/api/login", json={"email": "staff@demo.test", "password": DEMO_PASSWORD})
            token = login.json()["token"]
            await http.post("/api/terms/accept", json={"version": 1}, headers=bearer(token))
            await http.post("/api/login", json={"email": "staff@demo.test", "password": WRONG_PASSWORD})
            await http.get("/api/invitations/guessed-invitation-SECRET-91")
            await http.get("/media/files/s1/x/screen.jpg?expires=1&signature=forged-SECRET")
            me = (await http.get("/api/me", headers=bearer(token))).json()
        household = next(c["channel"] for c in me["channels"] if c["channel"].startswith("family:"))
        async with Client.connect(f"ws://{HOST}:{port}/ws", token) as staff:
            await staff.publish(household, SECRET_TEXT)
        assert await terminate(process) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines = await read_lines(err_path)
    text = "\n".join(lines)
    check_lines(text, "json")
    for secret in (DEMO_PASSWORD, WRONG_PASSWORD, token, "SECRET", "signature="):
        assert secret not in text, f"{secret!r} is in the logs"
    paths = [json.loads(line).get("path") for line in lines]
    assert "/api/invitations/<redacted>" in paths
    assert "/media/files/s1/x/screen.jpg" in paths
    assert any("Uvicorn running on" in json.loads(line)["message"] for line in lines)
    # The command's own messages (the demo password among them) are on stdout, not in the logs.
    assert "serving on" in out_path.read_text()
