"""Attacks on the console's sign-in and forms, over real HTTP: a forged or cross-origin form,
an open redirect after sign-in, session fixation, a revoked key's session, a guessed key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.keys import create_key, revoke_key
from tests.peers.live_server import LiveServer

ADMIN = "adversarial-console-admin"
COOKIE = "memvault_console"


@pytest.fixture
def console(tmp_path: Path, local_embedder: LocalEmbedder) -> Iterator[tuple[str, Memory]]:
    settings = load_settings({"data_dir": tmp_path, "admin_api_key": ADMIN,
                              "database_url": f"sqlite:///{tmp_path / 'm.db'}"})
    with Memory(settings, embedder=local_embedder) as memory, \
            LiveServer(app_over(settings, memory)) as server:
        yield server.url, memory


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


@contextmanager
def signed_in(url: str, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url) as client:
        form = client.get("/ui/signin")
        response = client.post("/ui/signin", data={
            "api_key": key, "csrf_token": csrf_of(form.text), "next": "/ui"})
        assert response.status_code == 303 and response.headers["location"] == "/ui"
        yield client


def test_pages_need_a_key_and_a_wrong_one_is_refused(console: tuple[str, Memory]) -> None:
    url, _ = console
    with httpx.Client(base_url=url) as client:
        page = client.get("/ui/memories?q=x")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/signin?next=%2Fui%2Fmemories%3Fq%3Dx"
        form = client.get("/ui/signin")
        assert "content-security-policy" in form.headers
        wrong = client.post("/ui/signin", data={"api_key": "guess",
                                                "csrf_token": csrf_of(form.text)})
        assert wrong.status_code == 401 and "Invalid API key." in wrong.text
        assert client.get("/ui").status_code == 303  # still signed out


@pytest.mark.parametrize("target", ["//evil.example/ui", "https://evil.example/", "/ui\\@evil",
                                    "/docs"])
def test_sign_in_never_redirects_off_the_console(console: tuple[str, Memory],
                                                 target: str) -> None:
    url, _ = console
    with httpx.Client(base_url=url) as client:
        form = client.get("/ui/signin")
        response = client.post("/ui/signin", data={
            "api_key": ADMIN, "csrf_token": csrf_of(form.text), "next": target})
        assert response.status_code == 303 and response.headers["location"] == "/ui"


def test_sign_in_issues_a_new_session_id(console: tuple[str, Memory]) -> None:
    url, _ = console
    with httpx.Client(base_url=url) as client:
        form = client.get("/ui/signin")
        planted = client.cookies[COOKIE]
        client.post("/ui/signin", data={"api_key": ADMIN, "csrf_token": csrf_of(form.text)})
        assert client.cookies[COOKIE] != planted
    # The session id from before sign-in (say, planted by someone else) is not signed in.
    assert httpx.get(f"{url}/ui", cookies={COOKIE: planted}).status_code == 303


def test_forms_without_the_token_or_from_another_origin_change_nothing(
        console: tuple[str, Memory]) -> None:
    url, memory = console
    memory_id = memory.add("keep me", user_id="alice", infer=False)["results"][0]["id"]
    with signed_in(url, ADMIN) as client:
        token = csrf_of(client.get(f"/ui/memories/{memory_id}").text)
        attempts = [
            ({"text": "changed"}, {}),  # no token
            ({"text": "changed", "csrf_token": "x" * 43}, {}),  # a guessed token
            # The token leaked, but the browser says the form came from another site or port.
            ({"text": "changed", "csrf_token": token}, {"sec-fetch-site": "cross-site"}),
            ({"text": "changed", "csrf_token": token}, {"sec-fetch-site": "same-site"}),
        ]
        for data, headers in attempts:
            response = client.post(f"/ui/memories/{memory_id}/edit", data=data,
                                   headers=headers)
            assert response.status_code == 403, (data, headers)
        as_json = client.post(f"/ui/memories/{memory_id}/delete",
                              json={"csrf_token": token})
        assert as_json.status_code == 415
        many = client.post(f"/ui/memories/{memory_id}/delete",
                           content="&".join(f"f{i}=1" for i in range(100)),
                           headers={"content-type": "application/x-www-form-urlencoded"})
        assert many.status_code == 400
        assert memory.get(memory_id)["memory"] == "keep me"
        done = client.post(f"/ui/memories/{memory_id}/edit",
                           data={"text": "changed", "csrf_token": token},
                           headers={"sec-fetch-site": "same-origin",
                                    "origin": "https://memvault.example"})  # behind a proxy
        assert done.status_code == 303 and memory.get(memory_id)["memory"] == "changed"


def test_memory_text_is_shown_as_text_never_as_markup(console: tuple[str, Memory]) -> None:
    url, memory = console
    memory.add('<script>alert(1)</script><img src=x onerror="alert(2)">', user_id="eve",
               infer=False)
    with signed_in(url, ADMIN) as client:
        page = client.get("/ui/memories?namespace=user%3Aeve").text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_revoked_key_signs_its_session_out(console: tuple[str, Memory]) -> None:
    url, memory = console
    key, token = create_key(memory.store, user_id="bob")
    memory.add("bob's", user_id="bob", infer=False)
    with signed_in(url, token) as client:
        assert client.get("/ui/memories").status_code == 200
        revoke_key(memory.store, key.id)
        again = client.get("/ui/memories")
        assert again.status_code == 303 and "expired=1" in again.headers["location"]
        assert "no longer valid" in client.get(again.headers["location"]).text


def test_a_scoped_key_cannot_reach_another_namespace(console: tuple[str, Memory]) -> None:
    url, memory = console
    _, token = create_key(memory.store, user_id="bob")
    alice = memory.add("alice's secret", user_id="alice", infer=False)["results"][0]["id"]
    with signed_in(url, token) as client:
        token_form = csrf_of(client.get("/ui/memories").text)
        for response in (client.get(f"/ui/memories/{alice}"),
                         client.get(f"/ui/memories/{alice}/delete"),
                         client.post(f"/ui/memories/{alice}/delete",
                                     data={"csrf_token": token_form}),
                         client.get("/ui/memories?namespace=user%3Aalice&q=secret")):
            assert response.status_code in (403, 404), response.status_code
            assert "alice&#39;s secret" not in response.text and "alice's secret" not in \
                response.text
    assert memory.get(alice) is not None


def test_open_mode_answers_only_under_a_loopback_name(tmp_path: Path,
                                                      local_embedder: LocalEmbedder) -> None:
    """DNS rebinding: a web site's name pointed at 127.0.0.1 would make the open console
    same-origin with that site."""
    settings = load_settings({"data_dir": tmp_path,
                              "database_url": f"sqlite:///{tmp_path / 'm.db'}"})
    with Memory(settings, embedder=local_embedder) as memory, \
            LiveServer(app_over(settings, memory)) as server:
        memory.add("private", user_id="alice", infer=False)
        port = server.url.rsplit(":", 1)[1]
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}"):
            page = httpx.get(f"{server.url}/ui/memories", headers={"host": host})
            assert page.status_code == 403 and "private" not in page.text, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert httpx.get(f"{server.url}/ui/memories", headers={"host": host}
                             ).status_code == 200, host
