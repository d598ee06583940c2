"""An approver may allow less than was asked, never more: the approval form's narrowing rules."""

from __future__ import annotations

from datetime import date
from types import MappingProxyType

from citygate.proxy.requests.form import FormProblems, checked_narrowing
from citygate.proxy.requests.model import Terms

TODAY = date(2026, 12, 8)
ASKED = Terms(
    ("facebook", "instagram"), date(2027, 3, 1), MappingProxyType({"instagram": ("/CityOfExampleParks",)})
)


def narrowed(sites=("facebook", "instagram"), pages="", until="2027-03-01"):
    return checked_narrowing(terms=ASKED, sites=sites, pages=pages, until=until, today=TODAY)


def test_the_request_as_it_stands_is_no_narrowing():
    assert narrowed() is None


def test_fewer_sites_an_earlier_day_and_fewer_pages_are_allowed():
    result = narrowed(sites=["instagram"], pages="/CityOfExampleParks/events", until="2027-01-31")

    assert result == Terms(
        ("instagram",), date(2027, 1, 31), MappingProxyType({"instagram": ("/CityOfExampleParks/events",)})
    )
    assert ASKED.covers(result)


def test_no_pages_keeps_the_pages_asked_for_and_never_widens_to_the_whole_site():
    result = narrowed(sites=["instagram"])

    assert result is not None and not isinstance(result, FormProblems)
    assert dict(result.paths) == {"instagram": ("/CityOfExampleParks",)}


def test_pages_on_a_whole_site_request_narrow_it_to_those_pages():
    result = narrowed(sites=["facebook"], pages="/CityOfExample")

    assert not isinstance(result, FormProblems) and result is not None
    assert dict(result.paths) == {"facebook": ("/CityOfExample",)}


def test_more_than_was_asked_is_refused_field_by_field():
    outside = narrowed(pages="/SomeoneElse")
    later = narrowed(until="2027-03-02")
    past = narrowed(until="2026-12-07")
    none = narrowed(sites=["twitter"])

    assert (
        isinstance(outside, FormProblems)
        and "outside the pages asked for on instagram" in outside.fields["pages"]
    )
    assert isinstance(later, FormProblems) and "never lengthen" in later.fields["until"]
    assert isinstance(past, FormProblems) and "from 2026-12-08" in past.fields["until"]
    assert isinstance(none, FormProblems) and "twitter was not asked for" in none.fields["sites"]
    unticked = narrowed(sites=[])
    assert isinstance(unticked, FormProblems) and "Keep at least one" in unticked.fields["sites"]
    # A misspelled site beside a right one is not dropped quietly.
    misspelled = narrowed(sites=["facebook", "instagarm"])
    assert (
        isinstance(misspelled, FormProblems) and "instagarm was not asked for" in misspelled.fields["sites"]
    )


def test_covers_refuses_anything_wider():
    assert not ASKED.covers(Terms(("facebook", "twitter"), date(2027, 1, 1)))
    assert not ASKED.covers(Terms(("facebook",), date(2027, 3, 2)))
    # The whole of a page-scoped site is wider than its pages.
    assert not ASKED.covers(Terms(("instagram",), date(2027, 1, 1)))
    assert not ASKED.covers(
        Terms(("instagram",), date(2027, 1, 1), MappingProxyType({"instagram": ("/Other",)}))
    )
    assert ASKED.covers(Terms(("facebook",), date(2027, 1, 1), MappingProxyType({"facebook": ("/x",)})))
