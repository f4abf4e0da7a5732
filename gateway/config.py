"""Load and validate the one TOML configuration file into frozen dataclasses.

Every problem is reported as a `ConfigError` naming the file, the key and what is wrong, so that
`parentgate check-config` can tell an IT manager exactly which line to fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.console_config import ConsoleConfig, read_console
from gateway.config_reader import (ADDRESS, ConfigError, Table, parse_clock, parse_duration, read_address,
                                   read_duration, read_positive, resolve_path, split_hostport)
from gateway.domain.calendar import HalfTerm, SchoolCalendar

__all__ = ["Config", "ConfigError", "load", "parse_clock", "parse_duration", "split_hostport"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NATIONS = ("ENG", "WLS", "SCT", "NIR", "none")
UNKNOWN_SENDERS = ("parent", "pass")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)+[A-Za-z0-9-]{1,63}$")


@dataclass(frozen=True)
class GatewayConfig:
    state_dir: Path
    database: str
    timezone: str
    postmaster: str
    rules_dir: Path | None
    log_level: str
    retention: timedelta


@dataclass(frozen=True)
class RetentionConfig:
    """How long each kind of record is kept before the purge job deletes it ([retention])."""

    # Delivered or forwarded mail, counted from when it was finished.
    delivered: timedelta = timedelta(days=400)
    # Mail the Head of School kept back.
    dismissed: timedelta = timedelta(days=400)
    # Mail from a blocked sender (never deleted before this, whatever else happens).
    blocked: timedelta = timedelta(days=400)
    # Incident records: the school's evidence, kept longest.
    incidents: timedelta = timedelta(days=2557)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    hostname: str
    max_message_size: int
    # "downstream": each RCPT is checked with a cached probe of the smarthost (gateway.act.probe).
    verify_recipients: str = "off"
    # Bounded connections (issue 12): beyond these a new connection gets 421 and is closed at once.
    max_connections: int = 500
    max_connections_per_client: int = 50
    idle_timeout: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class MetricsConfig:
    """Where `/metrics` (Prometheus) and `/healthz` are served; the [metrics] table is optional."""

    host: str
    port: int


@dataclass(frozen=True)
class DeliveryConfig:
    mode: str
    maildir_root: Path
    smarthost_host: str
    smarthost_port: int
    retry_first_delay: timedelta
    retry_max_delay: timedelta
    lifetime: timedelta
    concurrency: int


@dataclass(frozen=True)
class AcknowledgeConfig:
    enabled: bool
    period: timedelta
    respond_within: int
    max_per_sender_per_day: int


@dataclass(frozen=True)
class LimitsConfig:
    family_messages_per_half_term: int
    thread_messages: int
    long_message_words: int
    # Whether senders outside the family directory are counted per address towards the half-term limit.
    count_unknown_senders: bool = False


@dataclass(frozen=True)
class OAuth2Config:
    provider: str
    tenant_id: str
    client_id: str
    client_secret: str
    service_account_file: Path | None


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str | None
    oauth2: OAuth2Config | None


@dataclass(frozen=True)
class MailboxConfig:
    name: str
    school: str
    host: str
    port: int
    tls: str
    credentials: Credentials
    folder: str
    held_folder: str
    review_folder: str
    backfill_since: date | None
    poll_interval: timedelta


@dataclass(frozen=True)
class ImapConfig:
    """How IMAP mode treats the servers: at most `connect_concurrency` connections being opened at
    once to each server (host and port; start-up, reconnects), and reconnects backed off exponentially
    with full jitter from 1 s up to `reconnect_max_seconds`."""

    connect_concurrency: int = 20
    reconnect_max_seconds: int = 300


@dataclass(frozen=True)
class SubmissionConfig:
    host: str
    port: int
    starttls: bool
    credentials: Credentials | None


@dataclass(frozen=True)
class SchoolConfig:
    id: str
    name: str
    domains: tuple[str, ...]
    head_of_school: str
    office: str
    office_phone: str
    dsl: str
    acknowledge_from: str
    acknowledge: bool
    calendar: SchoolCalendar = field(repr=False, compare=False)
    # Mail from these domains (the trust's, the local authority's, other schools') is internal, like the
    # school's own; mail to these recipients (finance@) passes through. See `gateway.domain.senders`.
    passthrough_domains: tuple[str, ...] = ()
    passthrough_recipients: frozenset[str] = frozenset()
    # "parent": strangers are treated as parents (most parents write from unrecorded addresses); "pass".
    unknown_senders: str = "parent"

    @property
    def internal_domains(self) -> tuple[str, ...]:
        return self.domains + self.passthrough_domains


@dataclass(frozen=True)
class Config:
    path: Path
    gateway: GatewayConfig
    smtp: SmtpConfig
    delivery: DeliveryConfig
    acknowledge: AcknowledgeConfig
    limits: LimitsConfig
    schools: tuple[SchoolConfig, ...]
    mailboxes: tuple[MailboxConfig, ...]
    submission: SubmissionConfig | None
    metrics: MetricsConfig | None = None
    console: ConsoleConfig | None = None
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.gateway.timezone)

    def school(self, school_id: str) -> SchoolConfig:
        for school in self.schools:
            if school.id == school_id:
                return school
        raise KeyError(school_id)

    def school_for_domain(self, domain: str) -> SchoolConfig | None:
        domain = domain.lower()
        for school in self.schools:
            if domain in school.domains:
                return school
        return None

    @property
    def own_domains(self) -> frozenset[str]:
        return frozenset(d for s in self.schools for d in s.domains)


def _database_url(base: Path, state_dir: Path, raw: str | None) -> str:
    if raw is None:
        return f"sqlite:///{state_dir / 'parentgate.db'}"
    if raw.startswith("sqlite:///") and not raw.startswith("sqlite:////"):
        relative = raw[len("sqlite:///"):]
        if relative and relative != ":memory:":
            return f"sqlite:///{resolve_path(base, relative)}"
    return raw


def default_state_dir(base: Path, environ: Mapping[str, str]) -> Path:
    """Where state lives when the file does not say: systemd's StateDirectory=, else `var` beside the file.

    systemd passes the absolute paths of StateDirectory= in $STATE_DIRECTORY, colon-separated when
    the unit names several (systemd.exec(5)); the first is ours.
    """
    first = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(first) if first and Path(first).is_absolute() else base / "var"


def load(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate `path`. Raises ConfigError naming the file, key and problem."""
    path = Path(path).resolve()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "(file)", "does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "(file)", f"cannot be read: {exc.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(syntax)", str(exc)) from None
    base = path.parent
    root = Table(path, "", data)

    gw = root.table("gateway")
    state_raw = gw.optional("state_dir", str)
    state_dir = (resolve_path(base, state_raw) if state_raw
                 else default_state_dir(base, os.environ if environ is None else environ))
    database = _database_url(base, state_dir, gw.optional("database", str))
    if not database.startswith(("sqlite://", "postgresql")):
        raise gw.error("database", "must be a sqlite:/// or postgresql+psycopg:// URL")
    tz_name = gw.get("timezone", str, "Europe/London")
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise gw.error("timezone", f"unknown time zone {tz_name!r}") from None
    rules_raw = gw.optional("rules_dir", str)
    log_level = gw.get("log_level", str, "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise gw.error("log_level", "must be DEBUG, INFO, WARNING or ERROR")
    gateway = GatewayConfig(
        state_dir=state_dir, database=database, timezone=tz_name,
        postmaster=read_address(gw, "postmaster", "postmaster@localhost.localdomain"),
        rules_dir=resolve_path(base, rules_raw) if rules_raw else None, log_level=log_level,
        retention=read_duration(gw, "retention", "400d"))
    gw.finish()

    st = root.table("smtp")
    host, port = st.convert("listen", st.get("listen", str, "127.0.0.1:2525"), split_hostport)
    smtp = SmtpConfig(host=host, port=port, hostname=st.get("hostname", str, "parentgate.localdomain"),
                      max_message_size=read_positive(st, "max_message_size", 26214400),
                      verify_recipients=st.get("verify_recipients", str, "off"),
                      max_connections=read_positive(st, "max_connections", 500),
                      max_connections_per_client=read_positive(st, "max_connections_per_client", 50),
                      idle_timeout=read_duration(st, "idle_timeout", "60s"))
    if smtp.verify_recipients not in ("off", "downstream"):
        raise st.error("verify_recipients", f"must be \"off\" or \"downstream\", got {smtp.verify_recipients!r}")
    st.finish()

    dl = root.table("delivery")
    mode = dl.get("mode", str, "maildir")
    if mode not in ("maildir", "smtp"):
        raise dl.error("mode", f"must be \"maildir\" or \"smtp\", got {mode!r}")
    if smtp.verify_recipients == "downstream" and mode != "smtp":
        # The probe asks the smarthost; in maildir mode there is no server to ask.
        raise st.error("verify_recipients", '"downstream" needs [delivery] mode = "smtp"')
    sh_host, sh_port = dl.convert("smarthost", dl.get("smarthost", str, "127.0.0.1:10026"), split_hostport)
    maildir_raw = dl.optional("maildir_root", str)
    delivery = DeliveryConfig(
        mode=mode, maildir_root=resolve_path(base, maildir_raw) if maildir_raw else state_dir / "mail",
        smarthost_host=sh_host, smarthost_port=sh_port,
        retry_first_delay=read_duration(dl, "retry_first_delay", "5m"),
        retry_max_delay=read_duration(dl, "retry_max_delay", "4h"),
        lifetime=read_duration(dl, "lifetime", "5d"), concurrency=read_positive(dl, "concurrency", 20))
    if delivery.retry_max_delay < delivery.retry_first_delay:
        raise dl.error("retry_max_delay", "must not be shorter than retry_first_delay")
    dl.finish()

    ack = root.table("acknowledge")
    acknowledge = AcknowledgeConfig(
        enabled=ack.get("enabled", bool, True), period=read_duration(ack, "period", "7d"),
        respond_within=read_positive(ack, "respond_within", 2),
        max_per_sender_per_day=read_positive(ack, "max_per_sender_per_day", 3))
    ack.finish()

    lim = root.table("limits")
    limits = LimitsConfig(
        family_messages_per_half_term=read_positive(lim, "family_messages_per_half_term", 5),
        thread_messages=read_positive(lim, "thread_messages", 5),
        long_message_words=read_positive(lim, "long_message_words", 400),
        count_unknown_senders=lim.get("count_unknown_senders", bool, False))
    lim.finish()

    # [gateway] retention is the default for every kind of mail, as before [retention] existed.
    ret = root.table("retention")
    mail_default = f"{gateway.retention.days}d" if gateway.retention.days else f"{int(gateway.retention.total_seconds())}s"
    retention = RetentionConfig(
        delivered=read_duration(ret, "delivered", mail_default), dismissed=read_duration(ret, "dismissed", mail_default),
        blocked=read_duration(ret, "blocked", mail_default), incidents=read_duration(ret, "incidents", "2557d"))
    ret.finish()

    schools = tuple(_school(t, tz_name, acknowledge.enabled) for t in root.tables("schools"))
    if not schools:
        raise ConfigError(path, "schools", "at least one [[schools]] table is required")
    _check_unique(path, "schools", [s.id for s in schools], "id")
    _check_unique(path, "schools", [d for s in schools for d in s.domains], "domain")

    imap = root.table("imap")
    mailboxes = tuple(_mailbox(t, base, {s.id for s in schools}) for t in imap.tables("mailboxes"))
    _check_unique(path, "imap.mailboxes", [m.name for m in mailboxes], "name")
    imap_config = ImapConfig(connect_concurrency=read_positive(imap, "connect_concurrency", 20),
                             reconnect_max_seconds=read_positive(imap, "reconnect_max_seconds", 300))
    imap.finish()
    submission = _submission(root.table("submission"), base) if "submission" in data else None
    root.seen.add("submission")
    metrics = _metrics(root.table("metrics")) if "metrics" in data else None
    root.seen.add("metrics")
    console = read_console(root.table("console"), {s.id for s in schools}) if "console" in data else None
    root.seen.add("console")
    root.finish()
    return Config(path=path, gateway=gateway, smtp=smtp, delivery=delivery, acknowledge=acknowledge,
                  limits=limits, schools=schools, mailboxes=mailboxes, submission=submission, metrics=metrics,
                  console=console, retention=retention, imap=imap_config)


def _metrics(t: Table) -> MetricsConfig:
    host, port = t.convert("listen", t.get("listen", str, "127.0.0.1:9125"), split_hostport)
    t.finish()
    return MetricsConfig(host=host, port=port)


def _check_unique(path: Path, key: str, values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(path, key, f"{what} {value!r} appears more than once")
        seen.add(value)


def _school(t: Table, tz_name: str, ack_default: bool) -> SchoolConfig:
    school_id = t.get("id", str, required=True)
    if not re.match(r"^[A-Za-z0-9_-]+$", school_id):
        raise t.error("id", "use letters, digits, - and _ only")
    domains_raw = t.get("domains", list, required=True)
    if not domains_raw or not all(isinstance(d, str) and _DOMAIN.match(d) for d in domains_raw):
        raise t.error("domains", "must be a non-empty list of domain names")
    domains = tuple(d.lower() for d in domains_raw)
    ack_from = t.optional("acknowledge_from", str) or f"no-reply@{domains[0]}"
    if not ADDRESS.match(ack_from):
        raise t.error("acknowledge_from", f"{ack_from!r} is not an email address")
    ack_table = t.table("acknowledge")
    ack_enabled = ack_table.get("enabled", bool, ack_default)
    ack_table.finish()
    unknown_senders = t.get("unknown_senders", str, "parent")
    if unknown_senders not in UNKNOWN_SENDERS:
        raise t.error("unknown_senders", f"must be \"parent\" or \"pass\", got {unknown_senders!r}")
    passthrough_domains, passthrough_recipients = _passthrough(t.table("passthrough"), domains)

    hours = t.table("hours")
    open_at = hours.convert("open", hours.get("open", str, "08:00"), parse_clock)
    close_at = hours.convert("close", hours.get("close", str, "17:00"), parse_clock)
    if open_at is None:
        raise hours.error("open", "\"24:00\" is only allowed for close")
    if close_at is not None and close_at <= open_at:
        raise hours.error("close", "must be after open")
    day_names = hours.get("days", list, list(DAY_NAMES[:5]))
    bad = [d for d in day_names if d not in DAY_NAMES]
    if bad or not day_names:
        raise hours.error("days", f"use {', '.join(DAY_NAMES)}; got {bad or 'nothing'}")
    hours.finish()

    terms: list[HalfTerm] = []
    for term in t.tables("half_terms"):
        name = term.get("name", str, required=True)
        start = term.get("start", date, required=True)
        end = term.get("end", date, required=True)
        if end < start:
            raise term.error("end", f"{end} is before start {start}")
        if terms and start <= terms[-1].end:
            raise term.error("start", f"overlaps or precedes {terms[-1].name!r}; list half-terms in order")
        terms.append(HalfTerm(name=name, start=start, end=end))
        term.finish()

    closures = t.table("closures")
    inset = closures.get("inset_days", list, [])
    if not all(isinstance(d, date) for d in inset):
        raise closures.error("inset_days", "must be a list of dates (YYYY-MM-DD, unquoted)")
    nation = closures.get("bank_holidays", str, "ENG")
    if nation not in NATIONS:
        raise closures.error("bank_holidays", f"must be one of {', '.join(NATIONS)}")
    closures.finish()

    calendar = SchoolCalendar.for_nation(
        tz=ZoneInfo(tz_name), open_at=open_at, close_at=close_at,
        days=frozenset(DAY_NAMES.index(d) for d in day_names), half_terms=tuple(terms),
        inset_days=frozenset(inset), nation=nation)
    school = SchoolConfig(
        id=school_id, name=t.get("name", str, school_id), domains=domains,
        head_of_school=read_address(t, "head_of_school"), office=read_address(t, "office"),
        office_phone=t.get("office_phone", str, ""), dsl=read_address(t, "dsl"),
        acknowledge_from=ack_from.lower(), acknowledge=ack_enabled, calendar=calendar,
        passthrough_domains=passthrough_domains, passthrough_recipients=passthrough_recipients,
        unknown_senders=unknown_senders)
    t.finish()
    return school


def _passthrough(t: Table, own: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    """[schools.passthrough]: the domains whose mail is internal, and the recipients never screened."""
    domains = t.get("domains", list, [])
    if not all(isinstance(d, str) and _DOMAIN.match(d) for d in domains):
        raise t.error("domains", "must be a list of domain names, e.g. [\"trust.example.org\"]")
    recipients = t.get("recipients", list, [])
    for address in recipients:
        if not isinstance(address, str) or not ADDRESS.match(address):
            raise t.error("recipients", f"{address!r} is not an email address")
        # Mail for any other domain is refused at RCPT (never an open relay), so it could never arrive.
        if address.rpartition("@")[2].lower() not in own:
            raise t.error("recipients", f"{address!r} is not in the school's domains ({', '.join(own)})")
    t.finish()
    return tuple(d.lower().rstrip(".") for d in domains), frozenset(a.lower() for a in recipients)


def _credentials(t: Table, base: Path, *, required: bool) -> Credentials | None:
    username = t.optional("username", str)
    password = t.optional("password", str)
    password_file = t.optional("password_file", str)
    oauth = _oauth2(t.table("oauth2"), base) if "oauth2" in t.data else None
    t.seen.add("oauth2")
    if password_file is not None:
        if password is not None:
            raise t.error("password_file", "give password or password_file, not both")
        try:
            password = resolve_path(base, password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise t.error("password_file", f"cannot be read ({exc.strerror})") from None
    if username is None:
        if required:
            raise t.error("username", "is required")
        if password is not None or oauth is not None:
            raise t.error("username", "is required when a password or oauth2 is given")
        return None
    if password is None and oauth is None:
        raise t.error("password", "give password, password_file or an [oauth2] table")
    return Credentials(username=username, password=password, oauth2=oauth)


def _oauth2(t: Table, base: Path) -> OAuth2Config:
    provider = t.get("provider", str, required=True)
    if provider not in ("microsoft", "google"):
        raise t.error("provider", "must be \"microsoft\" or \"google\"")
    secret = t.optional("client_secret", str)
    secret_file = t.optional("client_secret_file", str)
    if secret_file:
        try:
            secret = resolve_path(base, secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise t.error("client_secret_file", f"cannot be read ({exc.strerror})") from None
    sa_file = t.optional("service_account_file", str)
    config = OAuth2Config(provider=provider, tenant_id=t.get("tenant_id", str, ""),
                          client_id=t.get("client_id", str, ""), client_secret=secret or "",
                          service_account_file=resolve_path(base, sa_file) if sa_file else None)
    if provider == "microsoft" and not (config.tenant_id and config.client_id and config.client_secret):
        raise t.error("tenant_id", "microsoft needs tenant_id, client_id and client_secret")
    if provider == "google" and config.service_account_file is None:
        raise t.error("service_account_file", "google needs a service account key file")
    t.finish()
    return config


def _mailbox(t: Table, base: Path, school_ids: set[str]) -> MailboxConfig:
    school = t.get("school", str, required=True)
    if school not in school_ids:
        raise t.error("school", f"no [[schools]] has id {school!r}")
    host = t.get("host", str, required=True)
    tls = t.get("tls", str, "ssl")
    if tls not in ("ssl", "starttls", "none"):
        raise t.error("tls", "must be \"ssl\", \"starttls\" or \"none\"")
    if tls == "none" and host not in ("127.0.0.1", "localhost", "::1"):
        raise t.error("tls", "\"none\" is only allowed for a server on this machine (127.0.0.1)")
    port = t.get("port", int, 993 if tls == "ssl" else 143)
    credentials = _credentials(t, base, required=True)
    assert credentials is not None
    folder = t.get("folder", str, "INBOX")
    since = t.optional("backfill_since", date)
    mailbox = MailboxConfig(
        name=t.get("name", str, f"{credentials.username}@{host}"), school=school, host=host, port=port,
        tls=tls, credentials=credentials, folder=folder,
        held_folder=t.get("held_folder", str, "Held until school opens"),
        review_folder=t.get("review_folder", str, "With the Head of School"),
        backfill_since=since, poll_interval=read_duration(t, "poll_interval", "60s"))
    t.finish()
    return mailbox


def _submission(t: Table, base: Path) -> SubmissionConfig:
    host = t.get("host", str, required=True)
    starttls = t.get("starttls", bool, True)
    submission = SubmissionConfig(host=host, port=t.get("port", int, 587), starttls=starttls,
                                  credentials=_credentials(t, base, required=False))
    t.finish()
    return submission
