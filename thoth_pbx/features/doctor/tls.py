"""The TLS certificate Meta will see on our transport: host names, trust, key, expiry.

Meta connects to `sip_hostname:port` over TLS and verifies our certificate like any public
TLS client: the chain must lead to a publicly trusted root, a SAN must cover the configured
host name, and it must not be expired (fact sheet §2; a mismatch "silently stops inbound
INVITEs"). So the doctor looks at what the transport really serves (a TLS handshake with the
transport, the way Meta's `openssl s_client -verify_hostname` test does) and judges it with
pure functions below. The public roots are certifi's bundle (Mozilla's CA list, the list
public TLS clients ship); Meta does not publish its own, so that is the closest we can get.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from thoth_pbx.features.doctor.verdicts import Verdict, cannot, fail, ok, warn

WARN_DAYS = 30


def public_bundle() -> str:
    """Path of the public CA bundle the trust check uses (certifi's copy of Mozilla's list)."""
    return certifi.where()


@dataclass(frozen=True)
class Probe:
    """What a TLS handshake with the transport showed."""

    target: str  # host:port we connected to
    leaf_der: bytes | None = None  # the certificate the transport presented
    connect_error: str | None = None  # nothing listens, refused, timeout, handshake failure
    verify_error: str | None = None  # OpenSSL's reason when the chain did not verify against the bundle


async def probe(host: str, port: int, *, bundle: str, timeout: float = 5.0, server_name: str | None = None) -> Probe:
    """Two handshakes: one that accepts anything (to read the certificate, even a bad one) and
    one that verifies the chain against `bundle` (host names are judged separately, per name).
    `server_name` goes out as SNI, as Meta sends the configured host name (an SBC in front of
    Asterisk may pick its certificate by it)."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    loose = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    try:
        leaf = await _handshake(host, port, loose, timeout, server_name)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return Probe(target, connect_error=_describe(exc))
    strict = ssl.create_default_context(cafile=bundle)
    strict.check_hostname = False
    verify_error = None
    try:
        await _handshake(host, port, strict, timeout, server_name)
    except ssl.SSLCertVerificationError as exc:
        verify_error = exc.verify_message or str(exc)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        verify_error = _describe(exc)
    return Probe(target, leaf, None, verify_error)


async def _handshake(
    host: str, port: int, context: ssl.SSLContext, timeout: float, server_name: str | None
) -> bytes | None:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, ssl_handshake_timeout=timeout, server_hostname=server_name or host
        )
    try:
        sslobj = writer.get_extra_info("ssl_object")
        return sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    finally:
        # no TLS close_notify exchange: pjsip does not answer it, and waiting costs the timeout
        writer.transport.abort()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer (timeout)"
    return str(exc) or type(exc).__name__


# ------------------------------------------------------------------ pure judgements


def load_leaf(der_or_pem: bytes) -> x509.Certificate:
    if der_or_pem.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificates(der_or_pem)[0]
    return x509.load_der_x509_certificate(der_or_pem)


def names_of(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of the subjectAltName; empty lists when there is none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def covers(pattern: str, hostname: str) -> bool:
    """RFC 6125: case-insensitive; a wildcard only as the whole leftmost label, matching one label."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern == hostname:
        return True
    if not pattern.startswith("*."):
        return False
    head, _, rest = hostname.partition(".")
    return bool(head) and rest == pattern[2:] and rest.count(".") >= 1


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def hostname_verdicts(cert: x509.Certificate, hostnames: list[str]) -> list[Verdict]:
    """One verdict per SIP host name configured on Meta's side: does a SAN cover it?"""
    check = "tls.hostname"
    if not hostnames:
        return [
            cannot(
                check,
                "no phone has a sip_hostname, so there is no host name Meta would verify the certificate against",
                "set sip_hostname on each SIP-enabled phone (the public DNS name of this PBX)",
            )
        ]
    dns, ips = names_of(cert)
    shown = ", ".join(dns + ips) or "none"
    out = []
    for host in hostnames:
        matched = host in ips if _is_ip(host) else any(covers(p, host) for p in dns)
        if matched:
            out.append(ok(check, f"the certificate's subjectAltName covers {host}", host))
        elif not dns and not ips:
            cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
            out.append(
                fail(
                    check,
                    f"the certificate has no subjectAltName (CN {', '.join(map(str, cn)) or 'none'}); "
                    "TLS clients ignore the CN, so it covers no host name",
                    f"get a certificate whose subjectAltName lists {host} (any public CA, e.g. Let's Encrypt)",
                    host,
                )
            )
        else:
            out.append(
                fail(
                    check,
                    f"the certificate is for {shown}, not {host}: Meta drops the TLS connection and no call arrives",
                    f"get a certificate whose subjectAltName lists {host}, or set the phone's sip_hostname "
                    "(and Meta's SIP server, `thoth-pbx calling enable`) to a name the certificate covers",
                    host,
                )
            )
    return out


def expiry_verdict(cert: x509.Certificate, now: dt.datetime, warn_days: int = WARN_DAYS) -> Verdict:
    check = "tls.expiry"
    not_after, not_before = cert.not_valid_after_utc, cert.not_valid_before_utc
    renew = "renew the certificate, copy it to cert_file/priv_key_file and restart Asterisk (transports load at start)"
    if now < not_before:
        return fail(check, f"the certificate is not valid before {not_before.isoformat()}", renew)
    left = not_after - now
    if left <= dt.timedelta(0):
        return fail(check, f"the certificate expired on {not_after.isoformat()}: Meta refuses it", renew)
    days = left.days
    if days < warn_days:
        return warn(check, f"the certificate expires in {days} day(s), on {not_after.isoformat()}", renew)
    return ok(check, f"the certificate is valid for {days} more days (until {not_after.date().isoformat()})")


def trust_verdict(found: Probe, bundle: str) -> Verdict:
    check = "tls.trust"
    if found.verify_error is None:
        return ok(check, f"the chain the transport serves leads to a root in the public CA bundle ({bundle})")
    return fail(
        check,
        f"the chain the transport serves is not publicly trusted ({found.verify_error}); "
        f"Meta verifies it against public roots, so it refuses the connection",
        "use a certificate from a public CA (e.g. Let's Encrypt) and put the full chain (certificate, then "
        "intermediates) in cert_file; a private or self-signed CA never works with Meta",
    )


def key_verdict(served: x509.Certificate, cert_pem: bytes | None, key_pem: bytes | None, paths: str) -> Verdict:
    """The served certificate proves Asterisk has its key (the handshake signs with it). When
    thoth-pbx can read the files too, they must match each other and what is served: a renewed
    certificate on disk only goes live when Asterisk restarts."""
    check = "tls.key"
    if cert_pem is None or key_pem is None:
        return ok(
            check,
            f"the transport completed TLS handshakes, so Asterisk holds the certificate's key "
            f"({paths} not readable from here, so the files themselves were not compared)",
        )
    try:
        on_disk = load_leaf(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return fail(
            check,
            f"cannot read {paths}: {exc}",
            "cert_file must be PEM (certificate first) and priv_key_file an unencrypted PEM key",
        )
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != on_disk.public_key().public_bytes(der, public):
        return fail(
            check,
            f"priv_key_file does not belong to cert_file ({paths}): at the next start the transport will not load",
            "put the key that was issued with this certificate in priv_key_file",
        )
    if on_disk.public_bytes(der) != served.public_bytes(der):
        return warn(
            check,
            "cert_file and priv_key_file match, but the transport still serves another certificate",
            "restart Asterisk when convenient (`thoth-pbx pbx restart --when-convenient`): transports load files at start",
        )
    return ok(check, "priv_key_file matches cert_file, and the transport serves that certificate")


def read_optional(path: str | None) -> bytes | None:
    """A file's bytes, or None when it is not set or not readable from here (Asterisk may run
    in a chroot or on another machine: its paths are not ours)."""
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def tls_verdicts(
    found: Probe,
    hostnames: list[str],
    *,
    bundle: str,
    now: dt.datetime,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    paths: str = "cert_file/priv_key_file",
) -> list[Verdict]:
    names = ("tls.hostname", "tls.trust", "tls.key", "tls.expiry")
    if found.leaf_der is None:
        why = found.connect_error or "no certificate was presented"
        return [
            cannot(n, f"no TLS handshake with the transport at {found.target}: {why}", "see transport.bound")
            for n in names
        ]
    leaf = load_leaf(found.leaf_der)
    return [
        *hostname_verdicts(leaf, hostnames),
        trust_verdict(found, bundle),
        key_verdict(leaf, cert_pem, key_pem, paths),
        expiry_verdict(leaf, now),
    ]
