"""Report mode: which mode applies to a decision, and the `mode:`/`departments:` settings."""

from pathlib import Path

import pytest

from citygate.directory.problems import Problems
from citygate.proxy.decision import Decision, Evidence, Reason, Result
from citygate.proxy.enforcement import Enforcement, Mode, parse_enforcement
from citygate.proxy.yamlfile import read_yaml


def denial(department: str | None) -> Decision:
    evidence = Evidence(employee="someone" if department else None, employee_department=department)
    return Decision(Result.DENY, Reason.NO_GRANT, "www.facebook.com", evidence=evidence)


def parse(tmp_path: Path, text: str) -> tuple[Enforcement, Problems]:
    path = tmp_path / "citygate.yaml"
    path.write_text(text)
    problems = Problems()
    return parse_enforcement(path, read_yaml(path, problems, "-"), problems), problems


def test_the_default_is_enforce():
    assert Enforcement().mode_for(denial("Parks")) is Mode.ENFORCE


def test_a_department_in_report_mode_is_reported_whatever_its_case():
    enforcement = Enforcement(departments={"parks": Mode.REPORT})

    assert enforcement.mode_for(denial("PARKS")) is Mode.REPORT
    assert enforcement.mode_for(denial("Police")) is Mode.ENFORCE


def test_an_unknown_employee_gets_the_default_mode():
    assert Enforcement(departments={"parks": Mode.REPORT}).mode_for(denial(None)) is Mode.ENFORCE
    assert Enforcement(default=Mode.REPORT).mode_for(denial(None)) is Mode.REPORT


def test_a_department_can_be_enforced_under_a_global_report_mode():
    enforcement = Enforcement(default=Mode.REPORT, departments={"police": Mode.ENFORCE})

    assert enforcement.mode_for(denial("Police")) is Mode.ENFORCE
    assert enforcement.mode_for(denial("Parks")) is Mode.REPORT


def test_parses_the_global_and_department_modes(tmp_path):
    enforcement, problems = parse(tmp_path, "city: X\nmode: report\ndepartments:\n  Parks: {mode: enforce}\n")

    assert not problems.errors
    assert enforcement.default is Mode.REPORT
    assert dict(enforcement.departments) == {"parks": Mode.ENFORCE}


def test_without_settings_everything_is_enforced(tmp_path):
    enforcement, problems = parse(tmp_path, "city: X\n")

    assert not problems.errors
    assert enforcement == Enforcement(Mode.ENFORCE, enforcement.departments)
    assert not enforcement.departments


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("city: X\nmode: monitor\n", 2, '"monitor" is not a mode'),
        ("city: X\ndepartments: [Parks]\n", 2, '"departments:" must be a mapping'),
        ("city: X\ndepartments:\n  Parks:\n    mode: report\n    level: 3\n", 5, 'unknown setting "level"'),
        ("city: X\ndepartments:\n  Parks:\n    mode: observe\n", 4, '"observe" is not a mode'),
        ("city: X\ndepartments:\n  Parks: report\n", 3, 'department "Parks" must be a mapping'),
        ("city: X\ndepartments:\n  Parks: {}\n", 3, 'department "Parks" has no mode'),
    ],
)
def test_mistakes_are_reported_with_file_line_and_fix(tmp_path, text, line, words):
    _, problems = parse(tmp_path, text)

    [problem] = problems.errors
    assert problem.line == line
    assert words in problem.message
    assert problem.fix
    assert str(problem.path).endswith("citygate.yaml")
