"""OAuth2 access tokens for IMAP XOAUTH2: Microsoft 365 and Google Workspace token providers.

Providers are synchronous (they run in a mailbox's IMAP thread), thread-safe,
and cache a token until shortly before it expires. The clock and the token
endpoint are injected so that tests run without a network.

Microsoft 365 (client credentials): register an app in Entra ID, add the API
permission "Office 365 Exchange Online → IMAP.AccessAsApp" (application) and
grant admin consent, create a client secret; then in Exchange Online PowerShell
register the app's service principal (`New-ServicePrincipal -AppId … -ObjectId
…`) and give it each watched mailbox (`Add-MailboxPermission -Identity
teacher@school.org -User <service principal id> -AccessRights FullAccess`).
Configure `provider = "microsoft"`, `tenant_id`, `client_id`, `client_secret`.

Google Workspace (domain-wide delegation): create a service account with a JSON
key, and in the Admin console (Security → API controls → Domain-wide
delegation) allow its client ID the scope `https://mail.google.com/`; IMAP must
be enabled for the users. Configure `provider = "google"` and
`service_account_file`; the token is requested for the mailbox's username.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import jwt

from gateway.config import MailboxConfig

OUTLOOK_SCOPE = "https://outlook.office365.com/.default"
GMAIL_SCOPE = "https://mail.google.com/"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

# Refresh this long before expiry, so that a token never expires between being
# handed out and the AUTHENTICATE command that uses it.
REFRESH_MARGIN = timedelta(minutes=5)
HTTP_TIMEOUT_S = 30.0

# Error codes (RFC 6749 §5.2 plus Microsoft's) that say "try again later";
# everything else means the configuration or the grant is wrong.
_TEMPORARY_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def xoauth2_string(user: str, token: str) -> bytes:
    """The XOAUTH2 SASL initial response: `user=…^Aauth=Bearer …^A^A` (before base64)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


class TokenError(Exception):
    """A token could not be obtained; `temporary` says whether retrying soon may help.

    The message names the provider and the error code, never a secret or a token.
    """

    def __init__(self, temporary: bool, message: str) -> None:
        super().__init__(message)
        self.temporary = temporary


class TokenProvider(Protocol):
    """Something that returns a valid OAuth2 access token, fetching a new one when needed."""

    def token(self) -> str: ...


@dataclass(frozen=True)
class _Cached:
    token: str
    refresh_at: datetime


def _refresh_at(now: datetime, expires_in: float) -> datetime:
    lifetime = timedelta(seconds=max(expires_in, 0))
    return now + lifetime - min(REFRESH_MARGIN, lifetime / 2)


class _CachedTokens:
    """A token kept until shortly before it expires; `_fetch` gets a new one (token, expires_in s)."""

    def __init__(self, now: Clock) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def token(self) -> str:
        with self._lock:
            now = self._now()
            if self._cached is not None and now < self._cached.refresh_at:
                return self._cached.token
            access_token, expires_in = self._fetch(now)
            self._cached = _Cached(access_token, _refresh_at(now, expires_in))
            return access_token

    def _fetch(self, now: datetime) -> tuple[str, float]:
        raise NotImplementedError


class ClientCredentialsApp(Protocol):
    """The part of `msal.ConfidentialClientApplication` we use; tests inject a fake."""

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]: ...


class MicrosoftTokenProvider(_CachedTokens):
    """Client-credentials tokens for Exchange Online IMAP, through msal."""

    def __init__(self, tenant_id: str, client_id: str, client_secret: str, *,
                 app: ClientCredentialsApp | None = None, now: Clock = _utc_now) -> None:
        super().__init__(now)
        self._tenant_id, self._client_id, self._secret = tenant_id, client_id, client_secret
        self._app = app

    def _fetch(self, now: datetime) -> tuple[str, float]:
        result = self._acquire()
        access_token = result.get("access_token")
        if not isinstance(access_token, str):
            code = str(result.get("error", "no_token"))
            # The description starts with an AADSTS code that an administrator can look up.
            detail = str(result.get("error_description", "")).splitlines()[:1]
            raise TokenError(code in _TEMPORARY_ERRORS,
                             f"Microsoft refused a token for client {self._client_id}: {code}"
                             + (f" ({detail[0]})" if detail else ""))
        return access_token, float(result.get("expires_in", 3600))

    def _acquire(self) -> dict[str, Any]:
        # msal talks to the network while building the app (authority discovery)
        # as well as when asking for a token, so both happen here, lazily.
        try:
            if self._app is None:
                import msal

                self._app = msal.ConfidentialClientApplication(
                    self._client_id, client_credential=self._secret,
                    authority=f"https://login.microsoftonline.com/{self._tenant_id}")
            assert self._app is not None
            return self._app.acquire_token_for_client(scopes=[OUTLOOK_SCOPE])
        except Exception as exc:
            raise TokenError(True, f"could not reach the Microsoft identity platform "
                                   f"({type(exc).__name__})") from None


@dataclass(frozen=True)
class _ServiceAccount:
    client_email: str
    private_key: str
    private_key_id: str
    token_uri: str


def _load_service_account(path: Path) -> _ServiceAccount:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _ServiceAccount(client_email=str(data["client_email"]), private_key=str(data["private_key"]),
                               private_key_id=str(data.get("private_key_id", "")),
                               token_uri=str(data.get("token_uri") or GOOGLE_TOKEN_URI))
    except OSError as exc:
        raise TokenError(False, f"cannot read service account file {path} ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError):
        raise TokenError(False, f"{path} is not a Google service account JSON key "
                                f"(needs client_email and private_key)") from None


class GoogleTokenProvider(_CachedTokens):
    """Service-account tokens for Gmail IMAP, impersonating one user by domain-wide delegation.

    Implements the JWT bearer grant (RFC 7523): a JWT signed with the service
    account's RS256 key is exchanged at the key file's `token_uri`.
    """

    def __init__(self, service_account_file: Path, subject: str, *, now: Clock = _utc_now,
                 timeout_s: float = HTTP_TIMEOUT_S) -> None:
        super().__init__(now)
        self._file, self._subject, self._timeout = service_account_file, subject, timeout_s
        self._account: _ServiceAccount | None = None

    def _fetch(self, now: datetime) -> tuple[str, float]:
        if self._account is None:
            self._account = _load_service_account(self._file)
        body = self._exchange(self._account, self._assertion(self._account, now))
        access_token = body.get("access_token")
        if not isinstance(access_token, str):
            raise TokenError(True, f"Google's token endpoint answered without an access_token "
                                   f"for {self._subject}")
        return access_token, float(body.get("expires_in", 3600))

    def _assertion(self, account: _ServiceAccount, now: datetime) -> str:
        issued = int(now.timestamp())
        claims = {"iss": account.client_email, "sub": self._subject, "scope": GMAIL_SCOPE,
                  "aud": account.token_uri, "iat": issued, "exp": issued + 3600}
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        try:
            return jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError):
            raise TokenError(False, f"the private key in {self._file} cannot sign (is the file intact?)") from None

    def _exchange(self, account: _ServiceAccount, assertion: str) -> dict[str, Any]:
        form = urllib.parse.urlencode({"grant_type": JWT_BEARER_GRANT, "assertion": assertion}).encode()
        request = urllib.request.Request(account.token_uri, data=form, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return _json_object(response.read())
        except urllib.error.HTTPError as exc:
            body = _json_object(exc.read())
            code = str(body.get("error", f"http_{exc.code}"))
            detail = str(body.get("error_description", "")).splitlines()[:1]
            hint = " (is domain-wide delegation granted for https://mail.google.com/?)" \
                if code in ("unauthorized_client", "access_denied") else ""
            raise TokenError(exc.code >= 500 or code in _TEMPORARY_ERRORS,
                             f"Google refused a token for {self._subject}: {code}"
                             + (f" ({detail[0]})" if detail else "") + hint) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TokenError(True, f"could not reach {account.token_uri} ({reason})") from None


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def provider_for(mailbox: MailboxConfig, *, now: Clock = _utc_now) -> TokenProvider | None:
    """The token provider a mailbox's configuration asks for, or None for password login."""
    oauth2 = mailbox.credentials.oauth2
    if oauth2 is None:
        return None
    if oauth2.provider == "microsoft":
        return MicrosoftTokenProvider(oauth2.tenant_id, oauth2.client_id, oauth2.client_secret, now=now)
    if oauth2.provider == "google":
        if oauth2.service_account_file is None:
            raise TokenError(False, f"{mailbox.name}: google needs a service account key file")
        return GoogleTokenProvider(oauth2.service_account_file, mailbox.credentials.username, now=now)
    raise TokenError(False, f"{mailbox.name}: unknown OAuth2 provider {oauth2.provider!r}")
