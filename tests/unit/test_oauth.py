"""OAuth2 for IMAP without a network: the XOAUTH2 string, Google against a loopback token endpoint, Microsoft faked."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import Credentials, MailboxConfig, OAuth2Config
from gateway.ingest.oauth import (
    GMAIL_SCOPE,
    JWT_BEARER_GRANT,
    OUTLOOK_SCOPE,
    GoogleTokenProvider,
    MicrosoftTokenProvider,
    TokenError,
    provider_for,
    xoauth2_string,
)
from tests.support import reply_json

T0 = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_xoauth2_string_follows_the_sasl_format() -> None:
    assert xoauth2_string("teacher@school.org", "ya29.token") == \
        b"user=teacher@school.org\x01auth=Bearer ya29.token\x01\x01"


# ---------------------------------------------------------------- Google

class TokenEndpoint:
    """A tiny token endpoint on 127.0.0.1 that records each form it receives."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self.status, self.body = 200, {"access_token": "ya29.first", "expires_in": 3600, "token_type": "Bearer"}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                endpoint.forms.append({key: values[0] for key, values in form.items()})
                reply_json(self, endpoint.status, endpoint.body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenEndpoint]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = TokenEndpoint()
    yield server
    server.close()


@pytest.fixture
def key_pair() -> tuple[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, key.public_key()


def key_file(tmp_path: Path, pem: str, token_uri: str) -> Path:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({"type": "service_account", "client_email": "gateway@proj.iam.gserviceaccount.com",
                                "private_key_id": "kid-1", "private_key": pem, "token_uri": token_uri}))
    return path


def test_google_signs_a_delegation_jwt_and_caches_the_token(
        tmp_path: Path, endpoint: TokenEndpoint, key_pair: tuple[str, Any]) -> None:
    pem, public_key = key_pair
    clock = Clock()
    provider = GoogleTokenProvider(key_file(tmp_path, pem, endpoint.url), "teacher@school.org", now=clock)
    assert provider.token() == "ya29.first"
    assert provider.token() == "ya29.first"
    assert len(endpoint.forms) == 1
    form = endpoint.forms[0]
    assert form["grant_type"] == JWT_BEARER_GRANT
    assert jwt.get_unverified_header(form["assertion"])["kid"] == "kid-1"
    claims = jwt.decode(form["assertion"], public_key, algorithms=["RS256"], audience=endpoint.url,
                        options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iss": "gateway@proj.iam.gserviceaccount.com", "sub": "teacher@school.org",
                      "scope": GMAIL_SCOPE, "aud": endpoint.url, "iat": int(T0.timestamp()),
                      "exp": int(T0.timestamp()) + 3600}


def test_google_token_is_refreshed_shortly_before_expiry(
        tmp_path: Path, endpoint: TokenEndpoint, key_pair: tuple[str, Any]) -> None:
    clock = Clock()
    provider = GoogleTokenProvider(key_file(tmp_path, key_pair[0], endpoint.url), "teacher@school.org", now=clock)
    provider.token()
    clock.now = T0 + timedelta(minutes=54)
    endpoint.body = {"access_token": "ya29.second", "expires_in": 3600}
    assert provider.token() == "ya29.first"
    clock.now = T0 + timedelta(minutes=56)
    assert provider.token() == "ya29.second"
    assert len(endpoint.forms) == 2


def test_google_refusal_is_permanent_and_names_the_delegation(
        tmp_path: Path, endpoint: TokenEndpoint, key_pair: tuple[str, Any]) -> None:
    endpoint.status = 401
    endpoint.body = {"error": "unauthorized_client",
                     "error_description": "Client is unauthorized to retrieve access tokens using this method"}
    provider = GoogleTokenProvider(key_file(tmp_path, key_pair[0], endpoint.url), "teacher@school.org")
    with pytest.raises(TokenError) as failure:
        provider.token()
    assert failure.value.temporary is False
    assert "unauthorized_client" in str(failure.value) and "domain-wide delegation" in str(failure.value)
    assert key_pair[0] not in str(failure.value)


def test_google_server_error_and_unreachable_endpoint_are_temporary(
        tmp_path: Path, endpoint: TokenEndpoint, key_pair: tuple[str, Any]) -> None:
    endpoint.status, endpoint.body = 503, {"error": "backendError"}
    with pytest.raises(TokenError) as failure:
        GoogleTokenProvider(key_file(tmp_path, key_pair[0], endpoint.url), "t@school.org").token()
    assert failure.value.temporary is True
    endpoint.close()
    with pytest.raises(TokenError) as failure:
        GoogleTokenProvider(key_file(tmp_path, key_pair[0], endpoint.url), "t@school.org", timeout_s=5).token()
    assert failure.value.temporary is True and "could not reach" in str(failure.value)


def test_google_unreadable_or_invalid_key_file_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read service account file"):
        GoogleTokenProvider(tmp_path / "missing.json", "t@school.org").token()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TokenError, match="not a Google service account JSON key") as failure:
        GoogleTokenProvider(tmp_path / "bad.json", "t@school.org").token()
    assert failure.value.temporary is False


# ---------------------------------------------------------------- Microsoft

class FakeMsalApp:
    def __init__(self, *results: dict[str, Any] | Exception) -> None:
        self.results = list(results)
        self.scopes: list[list[str]] = []

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
        self.scopes.append(scopes)
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


def test_microsoft_asks_for_the_outlook_scope_and_caches_until_shortly_before_expiry() -> None:
    clock = Clock()
    app = FakeMsalApp({"access_token": "eyJ.first", "expires_in": 3599, "token_type": "Bearer"},
                      {"access_token": "eyJ.second", "expires_in": 3599})
    provider = MicrosoftTokenProvider("tenant", "client", "secret", app=app, now=clock)
    assert provider.token() == "eyJ.first"
    clock.now = T0 + timedelta(minutes=50)
    assert provider.token() == "eyJ.first"
    clock.now = T0 + timedelta(minutes=56)
    assert provider.token() == "eyJ.second"
    assert app.scopes == [[OUTLOOK_SCOPE], [OUTLOOK_SCOPE]]


def test_microsoft_error_result_is_permanent_unless_the_service_is_unavailable() -> None:
    app = FakeMsalApp({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret.\nTrace"},
                      {"error": "temporarily_unavailable"}, ConnectionError("down"))
    provider = MicrosoftTokenProvider("tenant", "client-id", "s3cret", app=app)
    with pytest.raises(TokenError) as failure:
        provider.token()
    assert failure.value.temporary is False
    assert str(failure.value) == ("Microsoft refused a token for client client-id: invalid_client "
                                  "(AADSTS7000215: Invalid client secret.)")
    with pytest.raises(TokenError) as failure:
        provider.token()
    assert failure.value.temporary is True
    with pytest.raises(TokenError) as failure:
        provider.token()
    assert failure.value.temporary is True and "s3cret" not in str(failure.value)


# ---------------------------------------------------------------- provider_for

def mailbox(oauth2: OAuth2Config | None) -> MailboxConfig:
    return MailboxConfig("t@school.org", "s", "imap.example", 993, "ssl",
                         Credentials("t@school.org", None if oauth2 else "pw", oauth2), "INBOX", "Held",
                         "Review", date(2026, 1, 1), timedelta(seconds=60))


def test_provider_for_picks_the_configured_provider(tmp_path: Path) -> None:
    assert provider_for(mailbox(None)) is None
    microsoft = OAuth2Config("microsoft", "tenant", "client", "secret", None)
    assert isinstance(provider_for(mailbox(microsoft)), MicrosoftTokenProvider)
    google = OAuth2Config("google", "", "", "", tmp_path / "sa.json")
    assert isinstance(provider_for(mailbox(google)), GoogleTokenProvider)
