"""The portal's pages: the request form, an employee's requests, a Director's approvals.

Every page is for someone signed in (auth.py); every form carries a token for that person
(csrf.py). Directory lookups, the store and the grant file writer block, so they run in
threads; the decisions themselves are proxy/requests's, shared with the CLI.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from citygate.directory.backends import guard_settings, open_directory
from citygate.directory.cache import cache_settings
from citygate.directory.gateway import DirectoryGateway
from citygate.directory.model import BindOutcome, Directory
from citygate.directory.problems import ConfigError
from citygate.proxy.hosts import normalize_host
from citygate.proxy.identity.config import KerberosSettings
from citygate.proxy.identity.negotiate import NegotiateAcceptor
from citygate.proxy.policy import Policy, fingerprint, load_policy
from citygate.proxy.portal.auth import (
    NegotiateToken,
    NotSignedIn,
    SignedIn,
    address_of,
    challenges,
    credentials,
)
from citygate.proxy.portal.csrf import token_for, token_is_valid
from citygate.proxy.requests.evidence import submitted_record
from citygate.proxy.requests.form import FormProblems, checked_form, checked_narrowing
from citygate.proxy.requests.log import EvidenceLog
from citygate.proxy.requests.mail import Courier, delivering
from citygate.proxy.requests.model import AccessRequest
from citygate.proxy.requests.routing import Authority, authority
from citygate.proxy.requests.store import AlreadyOpen, RequestStore
from citygate.proxy.requests.workflow import Approver, Decided, approver_facts, decide, submit

log = logging.getLogger("citygate")

MAX_BODY_BYTES = 64 * 1024
DEFAULT_DAYS = 90


def _templates(site_name: Callable[[str], str]) -> Environment:
    environment = Environment(
        loader=PackageLoader("citygate.proxy.portal", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    environment.filters["site_names"] = lambda ids: ", ".join(site_name(site) for site in ids)
    return environment


class Portal:
    def __init__(
        self, config_path: Path, clock: Callable[[], datetime] | None = None, instance: str = ""
    ) -> None:
        self.config_path = config_path
        self.policy: Policy = load_policy(config_path)
        self.settings = self.policy.features.requests
        self._signature = fingerprint(self.policy.watched_files())
        if not self.settings.enabled:
            raise ValueError(
                f"access requests are off in {config_path}: set requests: {{enabled: true}} (README)"
            )
        self.clock = clock or (lambda: datetime.now(self.policy.timezone))
        self.directory: Directory = open_directory(self.policy.directory, str(config_path))
        # Passwords and people as the proxy asks for them: cached, breaker, bind rate per account.
        cache = cache_settings(self.policy.directory.options.get("cache"), str(config_path))
        self.gateway = DirectoryGateway(self.directory, cache, guard=guard_settings(self.directory))
        self.store = RequestStore(self.settings.database)
        # One chain per portal process: two processes cannot append to one (the port tells
        # apart the portals of one host).
        writer = f"portal-{instance}" if instance else "portal"
        self.evidence = EvidenceLog(self.policy.features.audit, self.policy.timezone, writer=writer)
        self.secret = b""  # the store's shared secret, read at start (app's lifespan)
        self.negotiate = _acceptor(self.policy)
        self.courier = Courier()  # replaced by the running one at start
        self.templates = _templates(self._site_name)

    # ------------------------------------------------------------------ the app

    def app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await run_in_threadpool(self.store.migrate)
            # The forms' key, shared through the store by every portal host behind a balancer.
            self.secret = await run_in_threadpool(self.store.shared_secret, "form-tokens")
            self.gateway.start()
            with self.evidence:
                # The due mail, every 30 s and after each request or decision, in a thread; the
                # outbox is in the store, shared by hosts.
                async with delivering(self.store, self.settings.email, self.clock) as courier:
                    self.courier = courier
                    yield
            self.store.close()
            self.gateway.close()

        routes = [
            Route("/", self.home),
            Route("/request", self.request_form, methods=["GET", "POST"]),
            Route("/requests/mine", self.mine),
            Route("/approvals", self.approvals),
            Route("/approvals/{request_id}", self.approval, methods=["GET", "POST"]),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/requests/mine", status_code=303)

    # ------------------------------------------------------------------ employees

    async def request_form(self, request: Request) -> Response:
        who = await self._signed_in(request)
        if isinstance(who, Response):
            return who
        answers = await self.gateway.people([who.uid])
        if who.uid not in answers:
            message = "The directory did not answer, so the form cannot be filled in: try again in a minute."
            return self._page("message.html", 503, who, title="Try again", message=message)
        person = answers[who.uid]
        if person is None:
            message = "Your account is not in the City's directory: ask IT."
            return self._page("message.html", 403, who, title="Not in the directory", message=message)
        today = self.clock().date()
        fields: dict[str, Any] = {
            "sites": [self._site_id(request.query_params.get("site", ""))],
            "purpose": "",
            "pages": "",
            "until": (today + timedelta(days=min(DEFAULT_DAYS, self.policy.max_grant_days - 1))).isoformat(),
        }
        problems: dict[str, str] = {}
        if request.method == "POST":
            form = await self._form(request, who)
            if isinstance(form, Response):
                return form
            fields = {
                "sites": form.getlist("sites"),
                "purpose": str(form.get("purpose", "")),
                "pages": str(form.get("pages", "")),
                "until": str(form.get("until", "")),
            }
            checked = checked_form(person=person, policy=self.policy, today=today, **fields)
            if isinstance(checked, FormProblems):
                problems = dict(checked.fields)
            else:
                stored = await run_in_threadpool(
                    lambda: submit(
                        store=self.store,
                        policy=self.policy,
                        directory=self.directory,
                        person=person,
                        draft=checked,
                        now=self.clock(),
                    )
                )
                if not isinstance(stored, AlreadyOpen):
                    await run_in_threadpool(
                        self.evidence.record, submitted_record(stored, who.method, who.address, self.clock())
                    )
                    self.courier.wake()  # its Directors are told now
                    return RedirectResponse(f"/requests/mine?submitted={stored.id}", status_code=303)
                problems["sites"] = (
                    f"You already have an open request for {self._site_name(stored.site)}: {stored.request_id}. "
                    "Wait for its decision, or ask the Director."
                )
        status = 400 if problems else 200
        return self._page(
            "request_form.html",
            status,
            who,
            person=person,
            today=today,
            fields=fields,
            problems=problems,
            sites=sorted(self.policy.catalog.sites.values(), key=lambda site: site.name),
            max_days=self.policy.max_grant_days,
            max_purpose=self.settings.max_purpose_chars,
        )

    async def mine(self, request: Request) -> Response:
        who = await self._signed_in(request)
        if isinstance(who, Response):
            return who
        found = await run_in_threadpool(self.store.of_employee, who.uid)
        return self._page(
            "mine.html", 200, who, requests=found, submitted=request.query_params.get("submitted")
        )

    # ------------------------------------------------------------------ Directors

    async def approvals(self, request: Request) -> Response:
        who = await self._signed_in(request)
        if isinstance(who, Response):
            return who
        approver, people = await run_in_threadpool(approver_facts, self.directory, self.policy, who.uid)
        pending = await run_in_threadpool(self.store.pending)
        now = self.clock()
        mine = [
            r
            for r in pending
            if isinstance(
                authority(r, self.settings.stages[r.stage], approver, self.policy, people, now), Authority
            )
        ]
        return self._page("approvals.html", 200, who, requests=mine)

    async def approval(self, request: Request) -> Response:
        who = await self._signed_in(request)
        if isinstance(who, Response):
            return who
        request_id = request.path_params["request_id"]
        found = await run_in_threadpool(self.store.get, request_id)
        if found is None:
            return self._page(
                "message.html",
                404,
                who,
                title="No such request",
                message=f"There is no request {request_id}.",
            )
        if request.method == "POST":
            form = await self._form(request, who)
            if isinstance(form, Response):
                return form
            approved = form.get("decision") == "approve"
            narrowed = None
            # A post without the narrowing fields (a script's) approves the request as it stands.
            if approved and any(name in form for name in ("sites", "pages", "until")):
                narrowing = checked_narrowing(
                    terms=found.terms,
                    sites=form.getlist("sites"),
                    pages=str(form.get("pages", "")),
                    until=str(form.get("until", "")),
                    today=self.clock().date(),
                )
                if isinstance(narrowing, FormProblems):
                    return await self._decision_page(who, found, 400, problems=dict(narrowing.fields))
                narrowed = narrowing
            outcome = await run_in_threadpool(
                lambda: decide(
                    store=self.store,
                    policy=self.policy,
                    config_path=self.config_path,
                    directory=self.directory,
                    request_id=request_id,
                    approver=Approver(who.uid, who.method, who.address),
                    approved=approved,
                    reason=str(form.get("reason", "")),
                    now=self.clock(),
                    record=self.evidence.record,
                    narrowed=narrowed,
                )
            )
            if isinstance(outcome, Decided):
                self.courier.wake()  # the employee (or the next stage) is told now
                return RedirectResponse(f"/approvals/{request_id}", status_code=303)
            found = await run_in_threadpool(self.store.get, request_id)
            assert found is not None, "a request is never deleted"
            return await self._decision_page(who, found, 400, problem=outcome.why)
        return await self._decision_page(who, found, 200)

    async def _decision_page(
        self,
        who: SignedIn,
        found: AccessRequest,
        status: int,
        problem: str | None = None,
        problems: dict[str, str] | None = None,
    ) -> Response:
        """A request, its history and, for who may decide it, the form (with any problems)."""
        history = [
            r for r in await run_in_threadpool(self.store.of_employee, found.employee) if r.id != found.id
        ]
        approver, people = await run_in_threadpool(approver_facts, self.directory, self.policy, who.uid)
        verdict = authority(
            found, self.settings.stages[found.stage], approver, self.policy, people, self.clock()
        )
        terms = found.terms
        scopes = {scope for scope in terms.paths.values()}
        return self._page(
            "decide.html",
            status,
            who,
            request=found,
            terms=terms,
            # The pages field starts as the request's one scope (the form asks one for all sites).
            pages="\n".join(next(iter(scopes))) if len(scopes) == 1 else "",
            history=history,
            # The grants in force for them by name (a group's or the city's are not theirs alone).
            grants=[grant for grant in self.policy.grants if grant.employee == found.employee],
            one_day=timedelta(days=1),  # a grant's valid_until is the day after its last
            stages=self.settings.stages,
            may_decide=found.status.open and isinstance(verdict, Authority),
            why_not=None if isinstance(verdict, Authority) else verdict.why,
            problem=problem,
            problems=problems or {},
            today=self.clock().date(),
            zone=self.policy.timezone,
        )

    # ------------------------------------------------------------------ shared

    def _refresh(self) -> None:
        """Load the configuration again when one of its files changed (a grant written by hand
        or by another host, a new stage), as the proxy does; a broken change keeps the last good
        one, and says so. The directory and the store are the ones the portal started with."""
        signature = fingerprint(self.policy.watched_files())
        if signature == self._signature:
            return
        try:
            policy = load_policy(self.config_path, previous=self.policy)
        except ConfigError as exc:
            log.error(
                "citygate: the changed configuration was not loaded: %s", "; ".join(map(str, exc.problems))
            )
            self._signature = signature  # said once; the next change is tried again
            return
        self.policy, self.settings = policy, policy.features.requests
        self._signature = fingerprint(policy.watched_files())

    async def _signed_in(self, request: Request) -> SignedIn | Response:
        await run_in_threadpool(self._refresh)
        given = credentials(request, negotiate=self.negotiate is not None)
        if isinstance(given, NotSignedIn):
            return self._refused(request, given)
        if isinstance(given, NegotiateToken):
            return await self._negotiated(request, given)
        verification = await self.gateway.authenticate(given.uid, given.password)
        outcome = verification.outcome
        if outcome is BindOutcome.UNAVAILABLE:
            why = NotSignedIn("The directory did not answer: try again in a minute.", ask=False)
            return self._refused(request, why, 503)
        if outcome is BindOutcome.RATE_LIMITED:
            wait = f"{verification.retry_after:.0f} seconds"
            return self._refused(
                request, NotSignedIn(f"Too many sign-in attempts: try again in {wait}.", ask=False), 429
            )
        if outcome is not BindOutcome.OK:
            return self._refused(
                request, NotSignedIn(f"Sign-in refused: {outcome.value.replace('_', ' ')}.", ask=True)
            )
        return SignedIn(given.uid.casefold(), "basic", address_of(request))

    async def _negotiated(self, request: Request, token: NegotiateToken) -> SignedIn | Response:
        """The employee a Kerberos ticket proves, if their account may sign in today."""
        assert self.negotiate is not None, "a Negotiate token is read only where Kerberos is set up"
        identity = await self.negotiate.identity(token.encoded)
        if identity.authenticated is None:
            broken = "The portal cannot check Kerberos sign-ins right now (IT has been told): use your password, or try again later."
            return self._refused(request, NotSignedIn(broken, ask=True), 503)
        if not identity.authenticated:
            return self._refused(
                request, NotSignedIn(f"Kerberos sign-in refused: {identity.problem}.", ask=True)
            )
        # A ticket outlives a disabled account by up to its lifetime: the directory decides.
        answers = await self.gateway.people([identity.user])
        if identity.user not in answers:
            silent = NotSignedIn("The directory did not answer: try again in a minute.", ask=False)
            return self._refused(request, silent, 503)
        person = answers[identity.user]
        if person is None or not person.can_sign_in:
            why = "your account is not in the City's directory" if person is None else person.state.described
            return self._refused(request, NotSignedIn(f"Sign-in refused: {why}. Ask IT.", ask=False))
        return SignedIn(identity.user, "negotiate", address_of(request))

    def _refused(self, request: Request, why: NotSignedIn, status: int | None = None) -> Response:
        offered = challenges(request, negotiate=self.negotiate is not None) if why.ask else []
        code = status or (401 if offered else 403)
        body = self.templates.get_template("message.html").render(
            title="Sign in", message=why.why, who=None, city=self.policy.city
        )
        response = HTMLResponse(body, status_code=code)
        for value in offered:
            response.headers.append("WWW-Authenticate", value)
        return response

    async def _form(self, request: Request, who: SignedIn) -> Any:
        length = request.headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return self._page(
                "message.html", 413, who, title="Too large", message="The form is too large to be a request."
            )
        form = await request.form(max_files=0, max_fields=100, max_part_size=MAX_BODY_BYTES)
        if not token_is_valid(self.secret, who.uid, str(form.get("csrf", ""))):
            return self._page(
                "message.html",
                403,
                who,
                title="The form has expired",
                message="This form was not opened by you in this portal, or it is too old: open it again.",
            )
        return form

    def _site_id(self, value: str) -> str:
        """The catalog id of a site given by id or by host (the block page passes the blocked host)."""
        catalog = self.policy.catalog
        if value.casefold() in catalog.sites:
            return value.casefold()
        host = normalize_host(value)
        match = catalog.match(host) if host is not None else None
        return match.site.id if match is not None else ""

    def _site_name(self, site_id: str) -> str:
        site = self.policy.catalog.sites.get(site_id)
        return site.name if site else site_id

    def _page(self, template: str, status: int, who: SignedIn | None, **values: Any) -> Response:
        body = self.templates.get_template(template).render(
            who=who,
            csrf=token_for(self.secret, who.uid) if who else "",
            city=self.policy.city,
            site_name=self._site_name,
            **values,
        )
        return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _acceptor(policy: Policy) -> NegotiateAcceptor | None:
    """Negotiate for the portal's own principal, from the proxy's keytab, in the proxy's realms."""
    principal = policy.features.requests.kerberos_principal
    kerberos = policy.features.identity.kerberos
    if principal is None or kerberos is None:  # both or neither: the policy's load checks it
        return None
    return NegotiateAcceptor(KerberosSettings(kerberos.keytab, principal, kerberos.realms))


def create_app(
    config_path: Path, clock: Callable[[], datetime] | None = None, instance: str = ""
) -> Starlette:
    return Portal(config_path, clock, instance).app()
