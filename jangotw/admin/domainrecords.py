# -*- test-case-name: tests.admin.test_domains -*-
"""The DNS records a sender domain publishes so receivers accept its mail from this server.

For C{example.com}, with C{[delivery] spf_include = "_spf.relay.example.net"}:

    example.com.                    TXT    "v=spf1 include:_spf.relay.example.net ~all"
    jt202406._domainkey.example.com. TXT   "v=DKIM1; k=rsa; p=MIIB..." "..."   (255-octet strings)
    _dmarc.example.com.             TXT    "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"
    track.example.com.              CNAME  the [tracking] base_url host
    bounces.example.com.            CNAME  the [delivery] bounce_domain

SPF lets this server's addresses send for the domain (the include names the
server's own record, else C{sending_addresses} are listed); DKIM publishes
each key that is not retired; DMARC starts at C{p=none} so the aggregate
reports can be read before C{p=quarantine} and C{p=reject}; the tracking
CNAME serves the account's tracking links under the domain; the return-path
name gives bounce addresses under the domain the bounce domain's MX and SPF
record, so SPF for them aligns with the From domain. A subdomain
(C{news.example.com}) gets its own records; its organisational domain's DMARC
record covers it too, through C{sp=}.
"""
from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address
from urllib.parse import urlsplit

from attrs import frozen

from ..model import DomainKey
from ..pipeline.dkim import dns_record, split_txt
from ..senders.returnpath import RETURN_PATH_LABEL

__all__ = ["SenderSettings", "DNSRecord", "spf_terms", "spf_record", "dmarc_record", "tracking_name",
           "RETURN_PATH_LABEL", "TRACKING_LABEL", "records_for", "zone_line", "with_terms", "DMARC_ADVICE"]

TRACKING_LABEL = "track"
DMARC_ADVICE = ("start with p=none and read the aggregate reports (rua) for a few weeks; once only mail "
                "you do not send fails, move to p=quarantine, then to p=reject")


@frozen
class SenderSettings:
    """What the records name of this server, from the configuration."""

    spf_include: str = ""  # [delivery] spf_include
    sending_addresses: tuple[str, ...] = ()  # [delivery] sending_addresses
    tracking_host: str = ""  # the host of [tracking] base_url
    bounce_domain: str = ""  # [delivery] bounce_domain

    @classmethod
    def from_config(cls, spf_include: str, sending_addresses: Sequence[str], tracking_base_url: str,
                    bounce_domain: str) -> "SenderSettings":
        return cls(spf_include.lower().rstrip("."), tuple(sending_addresses),
                   (urlsplit(tracking_base_url).hostname or "").lower(), bounce_domain.lower().rstrip("."))


@frozen
class DNSRecord:
    """One record to publish: C{kind} is spf, dkim, dmarc, tracking or return-path."""

    kind: str
    name: str  # owner, no final dot
    type: str  # TXT or CNAME
    value: str  # the whole TXT text, or the CNAME target
    note: str = ""
    selector: str = ""  # dkim: the key's selector
    required: bool = True  # tracking and return-path records are optional

    @property
    def strings(self) -> list[str]:
        """The TXT value as the 255-octet strings of one record."""
        return split_txt(self.value) if self.type == "TXT" else [self.value]


def spf_terms(settings: SenderSettings) -> list[str]:
    """The SPF terms that allow this server: an include of its record, else its addresses."""
    if settings.spf_include:
        return [f"include:{settings.spf_include}"]
    return [f"ip{ip_address(address).version}:{address}" for address in settings.sending_addresses]


def spf_record(settings: SenderSettings) -> str:
    return " ".join(["v=spf1", *spf_terms(settings), "~all"])


def with_terms(record: str, terms: Sequence[str]) -> str:
    """C{record} with C{terms} added before its C{all} mechanism or C{redirect} (else at the end)."""
    parts = record.split()
    missing = [term for term in terms if term.lower() not in (part.lower() for part in parts)]
    position = next((index for index, part in enumerate(parts)
                     if part.lower().lstrip("+-~?") == "all" or part.lower().startswith("redirect=")), len(parts))
    return " ".join(parts[:position] + missing + parts[position:])


def dmarc_record(domain: str) -> str:
    return f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"


def tracking_name(domain: str, tracking_domain: str) -> str:
    """The account's tracking host when it is under C{domain}, else C{track.<domain>}."""
    host = (urlsplit(tracking_domain).hostname if "://" in tracking_domain else tracking_domain).lower().rstrip(".")
    return host if host == domain or host.endswith("." + domain) else f"{TRACKING_LABEL}.{domain}"


def records_for(domain: str, keys: Sequence[DomainKey], settings: SenderSettings, tracking_domain: str,
                organisational_domain: str) -> list[DNSRecord]:
    """Every record C{domain} publishes for its keys that are not retired."""
    found = []
    if settings.spf_include or settings.sending_addresses:
        found.append(DNSRecord("spf", domain, "TXT", spf_record(settings),
                               "merge into the domain's SPF record if it has one: one SPF record only"))
    for key in keys:
        if key.retired_at is None:
            name, value = dns_record(key)
            found.append(DNSRecord("dkim", name, "TXT", value, f"{key.algorithm} key", key.selector))
    note = f"{DMARC_ADVICE}; replace the rua address by a mailbox that reads the reports"
    if organisational_domain != domain:
        note += (f"; without this record, _dmarc.{organisational_domain} applies to {domain} "
                 "through its sp= tag (its p= when it has no sp=)")
    found.append(DNSRecord("dmarc", f"_dmarc.{domain}", "TXT", dmarc_record(domain), note))
    if settings.tracking_host:
        name = tracking_name(domain, tracking_domain)
        found.append(DNSRecord("tracking", name, "CNAME", settings.tracking_host,
                               f"open and click tracking under the domain: set the account's tracking_domain "
                               f"to {name}", required=False))
    if settings.bounce_domain:
        found.append(DNSRecord("return-path", f"{RETURN_PATH_LABEL}.{domain}", "CNAME", settings.bounce_domain,
                               f"bounce addresses under {domain} get {settings.bounce_domain}'s MX and SPF "
                               f"record, so SPF for bounces aligns with From addresses at {domain}",
                               required=False))
    return found


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def zone_line(record: DNSRecord) -> str:
    """The record as a zone-file line, ready to paste (TXT values as quoted 255-octet strings)."""
    if record.type == "CNAME":
        return f"{record.name}. IN CNAME {record.value}."
    return f"{record.name}. IN TXT {' '.join(_quoted(text) for text in record.strings)}"
