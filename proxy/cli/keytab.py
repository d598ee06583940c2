"""`citygate check` on the proxy's Kerberos keytab: readable, private, holding the principal, with usable keys.

The keytab is read with MIT krb5's own keytab API (python-krb5), as the acceptor reads it, so
what this reports is what Negotiate sign-in will find. Key material is never printed.
"""

from __future__ import annotations

import grp
import os
import stat
from dataclasses import dataclass, field

import krb5

from citygate.proxy.identity.config import KerberosSettings

# RC4 (arcfour-hmac, arcfour-hmac-exp) and single DES: deprecated (RFC 8429, RFC 6649) and being
# turned off in Active Directory; a keytab with nothing stronger is refused before it stops working.
_WEAK_ENCTYPES = frozenset({1, 2, 3, 23, 24})
_EXPORT_FIX = (
    "export the keytab again with AES keys: in Active Directory set msDS-SupportedEncryptionTypes: 24 "
    "(AES128+AES256) on the proxy's service account, then ktpass ... -crypto AES256-SHA1 (AD exports "
    "RC4-only keys unless that attribute is set)"
)


@dataclass(slots=True)
class KeytabReport:
    """What `check` prints: errors fail it, warnings do not; `keys` describes what the keytab holds."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def check_keytab(settings: KerberosSettings) -> KeytabReport:
    report = KeytabReport()
    path = settings.keytab
    where = f"{settings.location}: keytab {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        report.errors.append(
            f"{where} does not exist; export the proxy's keytab (AD: ktpass, MIT: kadmin ktadd) "
            "and give its path in identity.kerberos.keytab, relative to the config file"
        )
        return report
    if not stat.S_ISREG(info.st_mode):
        report.errors.append(f"{where} is not a file; give the keytab file's path")
        return report
    if not os.access(path, os.R_OK):
        report.errors.append(
            f"{where} cannot be read by this user (uid {os.getuid()}); make it owned by the user "
            "citygate runs as: chown citygate: and chmod 0600"
        )
        return report
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o007:
        report.warnings.append(
            f"{where} is open to every user of this machine (mode {mode:04o}): whoever reads it can pose "
            "as the proxy; chmod 0600, owned by the user citygate runs as"
        )
    elif mode & 0o070:
        report.warnings.append(
            f"{where} is open to the group {_group(info.st_gid)} (mode {mode:04o}): whoever reads it can pose "
            "as the proxy; keep it only if that group holds nobody but citygate's user, else chmod 0600"
        )
    try:
        entries = _entries(path)
    except krb5.Krb5Error as exc:
        report.errors.append(f"{where} cannot be read as a keytab ({_message(exc)}); export it again")
        return report
    wanted = [(kvno, enctype) for principal, kvno, enctype in entries if principal == settings.principal]
    if not wanted:
        held = sorted({principal for principal, _, _ in entries}) or ["no keys at all"]
        report.errors.append(
            f"{where} holds no key for {settings.principal} (it holds: {', '.join(held)}); export the "
            "keytab for that principal, or set identity.kerberos.principal to the one it holds"
        )
        return report
    for kvno in sorted({kvno for kvno, _ in wanted}):
        names = [_enctype_name(enctype) for number, enctype in wanted if number == kvno]
        report.keys.append(f"{settings.principal} key version {kvno}: {', '.join(names)}")
    newest = max(kvno for kvno, _ in wanted)
    if all(enctype in _WEAK_ENCTYPES for kvno, enctype in wanted if kvno == newest):
        report.errors.append(
            f"{where}: the keys of {settings.principal} (key version {newest}) are RC4 or DES only; {_EXPORT_FIX}"
        )
    return report


def _entries(path: os.PathLike[str]) -> list[tuple[str, int, int]]:
    """(principal, key version, enctype) of each keytab entry."""
    context = krb5.init_context()
    keytab = krb5.kt_resolve(context, f"FILE:{os.fspath(path)}".encode())
    return [(str(entry.principal), entry.kvno, entry.key.enctype) for entry in keytab]


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _enctype_name(enctype: int) -> str:
    try:
        return krb5.enctype_to_name(enctype, False)
    except krb5.Krb5Error:
        return f"enctype {enctype}"


def _message(exc: krb5.Krb5Error) -> str:
    """krb5's words without its error number."""
    return str(exc.args[0]) if exc.args else str(exc)
