"""The `requests.email` settings: the mail server the access-request notices go through."""

from __future__ import annotations

from citygate.proxy.requests.config import EmailSettings, SmtpSecurity

REQUESTS = (
    "requests:\n  enabled: true\n  portal_url: https://requests.city.example\n  email:\n"  # lines 12-15
)


def email_config(policy_files, *lines: str) -> str:
    return policy_files.mini_config + REQUESTS + "".join(f"    {line}\n" for line in lines)


def test_the_settings_with_their_defaults(policy_files):
    policy_files.root.mkdir(parents=True)
    (policy_files.root / "smtp-password").write_text("secret\n")
    (policy_files.root / "city-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = email_config(
        policy_files,
        "smtp_host: mail.city.example",
        "sender: City of Example <citygate@city.example>",
        "username: citygate",
        "password_file: smtp-password",
        "ca_file: city-ca.pem",
    )

    email = policy_files.load(config=config).features.requests.email

    assert email == EmailSettings(
        smtp_host="mail.city.example",
        sender="City of Example <citygate@city.example>",
        smtp_port=587,
        security=SmtpSecurity.STARTTLS,
        username="citygate",
        password_file=policy_files.root / "smtp-password",
        ca_file=policy_files.root / "city-ca.pem",
        remind_days_before=7,
        timeout_seconds=10,
    )


def test_implicit_tls_defaults_to_port_465_and_a_local_relay_may_be_plain(policy_files):
    tls = email_config(
        policy_files, "smtp_host: mail.city.example", "security: tls", "sender: citygate@city.example"
    )
    email = policy_files.load(config=tls).features.requests.email
    assert email is not None and (email.security, email.smtp_port) == (SmtpSecurity.TLS, 465)

    for host in ("localhost", "127.0.0.1", "::1"):
        relay = email_config(
            policy_files, f"smtp_host: '{host}'", "security: none", "sender: citygate@city.example"
        )
        email = policy_files.load(config=relay).features.requests.email
        assert email is not None and (email.security, email.smtp_port) == (SmtpSecurity.NONE, 25), host


def test_without_an_email_section_no_mail_is_sent(policy_files):
    settings = policy_files.load(
        config=policy_files.mini_config + "requests:\n  enabled: true\n"
    ).features.requests

    assert settings.enabled and settings.email is None


def test_a_bad_section_reports_every_problem_with_its_line_and_fix(policy_files):
    config = email_config(
        policy_files,
        "smtp_host: mail.city.example",  # 16
        "security: none",  # 17: in clear to another machine
        "sender: not an address",  # 18
        "username: citygate",  # 19: without password_file
        "password: hunter2",  # 20
        "remind_days_before: 0",  # 21
        "ca_file: missing-ca.pem",  # 22
        "colour: blue",  # 23
    )

    found = policy_files.problems(config=config)
    problems = {p.line: p for p in found if p.severity == "error"}

    assert sorted(problems) == [17, 18, 19, 20, 21, 22, 23]
    assert "would send mail (and the SMTP password) to mail.city.example in clear" in problems[17].message
    assert "smtp_host: localhost" in problems[17].fix
    assert problems[18].message == "requests.email.sender 'not an address' is not a mail address"
    assert problems[19].message == "requests.email.username is set without password_file"
    assert "a password is never written in the configuration" in problems[20].message
    assert "password_file" in problems[20].fix
    assert problems[21].message == "requests.email.remind_days_before 0 is not a whole number from 1 to 60"
    assert problems[22].message.endswith("missing-ca.pem is not a file")
    assert problems[23].message == 'unknown setting "requests.email.colour"'
    assert not any("hunter2" in str(p) for p in found)  # the password is never repeated
    assert all(str(p).startswith(f"{policy_files.config}:{line}: ") for line, p in problems.items())


def test_the_required_settings_are_named(policy_files):
    problems = [
        p.message for p in policy_files.problems(config=email_config(policy_files, "smtp_port: 2525"))
    ]

    assert "requests.email.smtp_host is missing" in problems
    assert "requests.email.sender is missing" in problems


def test_a_header_cannot_be_smuggled_in_through_the_sender(policy_files):
    config = email_config(
        policy_files, "smtp_host: mail.city.example", 'sender: "citygate@city.example\\nBcc: x@evil.example"'
    )

    [problem] = policy_files.problems(config=config)

    assert problem.line == 17 and "is not a mail address" in problem.message


def test_mail_without_a_portal_address_is_a_warning(policy_files):
    config = policy_files.mini_config + (
        "requests:\n  enabled: true\n  email:\n    smtp_host: mail.city.example\n    sender: citygate@city.example\n"
    )

    policy = policy_files.load(config=config)

    assert policy.features.requests.email is not None
    assert policy.warnings == (
        f"{policy_files.config}:14: warning: requests.email is set without requests.portal_url: the mails "
        "cannot link the portal; add portal_url: https://requests.city.example (where citygate portal is served)",
    )
