"""A check's answer: ok / warn / fail / cannot_check, what was seen, and what to do about it.

Every check of the doctor returns Verdicts; nothing else. `cannot_check` is for what cannot
be known from where thoth-pbx runs (Meta reaching our port from the internet, a key file
Asterisk reads but we cannot): saying so is the point, a silent "ok" would be a lie.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

OK = "ok"
WARN = "warn"
FAIL = "fail"
CANNOT = "cannot_check"
STATUSES = (OK, WARN, FAIL, CANNOT)

# `thoth-pbx doctor` exit codes (docs/doctor.md): warnings are not "all well", but they are
# not a broken trunk either, so scripts can tell the two apart. cannot_check never changes it.
EXIT_OK = 0
EXIT_FAIL = 1
EXIT_WARN = 3


@dataclass(frozen=True)
class Verdict:
    check: str  # dotted name, e.g. "tls.hostname" (docs/doctor.md lists them all)
    status: str  # one of STATUSES
    message: str  # what was seen
    fix: str | None = None  # what to do (None when ok)
    subject: str | None = None  # what it is about when a check runs per thing: a number, a WABA, a portal

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix,
        }


def ok(check: str, message: str, subject: str | None = None) -> Verdict:
    return Verdict(check, OK, message, None, subject)


def warn(check: str, message: str, fix: str, subject: str | None = None) -> Verdict:
    return Verdict(check, WARN, message, fix, subject)


def fail(check: str, message: str, fix: str, subject: str | None = None) -> Verdict:
    return Verdict(check, FAIL, message, fix, subject)


def cannot(check: str, message: str, fix: str | None = None, subject: str | None = None) -> Verdict:
    return Verdict(check, CANNOT, message, fix, subject)


@dataclass(frozen=True)
class Report:
    verdicts: tuple[Verdict, ...]

    @classmethod
    def of(cls, verdicts: Iterable[Verdict]) -> Report:
        return cls(tuple(verdicts))

    def count(self, status: str) -> int:
        return sum(1 for v in self.verdicts if v.status == status)

    @property
    def exit_code(self) -> int:
        if self.count(FAIL):
            return EXIT_FAIL
        if self.count(WARN):
            return EXIT_WARN
        return EXIT_OK

    def by_check(self, check: str) -> list[Verdict]:
        return [v for v in self.verdicts if v.check == check]

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "summary": {status: self.count(status) for status in STATUSES},
            "checks": [v.as_json() for v in self.verdicts],
        }


def human(report: Report, *, width: int = 100) -> str:
    """The report as the admin reads it in a terminal: one line per verdict, the fix under it."""
    marks = {OK: "[ ok ]", WARN: "[warn]", FAIL: "[FAIL]", CANNOT: "[ ?? ]"}
    lines: list[str] = []
    for v in report.verdicts:
        about = f" ({v.subject})" if v.subject else ""
        lines.append(f"{marks[v.status]} {v.check}{about}: {v.message}")
        if v.fix:
            lines.append(f"       fix: {v.fix}")
    s = report.as_json()["summary"]
    lines.append("")
    lines.append(f"{s[OK]} ok, {s[WARN]} warning(s), {s[FAIL]} failure(s), {s[CANNOT]} not checkable from here")
    return "\n".join(lines) + "\n"


def worst(verdicts: Sequence[Verdict]) -> str:
    order = {OK: 0, CANNOT: 1, WARN: 2, FAIL: 3}
    return max((v.status for v in verdicts), key=lambda s: order[s], default=OK)
