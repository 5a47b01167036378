"""The ``:`` command language, parsed without Textual (k9s habits).

``:nodes``, ``:jobs``, ``:overview``, ``:triage``, ``:rollouts``, ``:node NAME``, ``:job ID``, ``:drain`` /
``:resume`` / ``:reboot`` / ``:maint`` (on marked rows), ``:help``, ``:quit``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VIEWS = {
    "overview": "overview",
    "ov": "overview",
    "o": "overview",
    "nodes": "nodes",
    "node": "nodes",
    "no": "nodes",
    "n": "nodes",
    "jobs": "jobs",
    "job": "jobs",
    "j": "jobs",
    "triage": "triage",
    "problems": "triage",
    "t": "triage",
    "rollouts": "rollouts",
    "rollout": "rollouts",
    "ro": "rollouts",
}
ACTIONS = ("drain", "resume", "reboot", "maint")
OTHER = ("help", "quit", "q", "pause", "refresh")
KNOWN = sorted({*VIEWS, *ACTIONS, *OTHER})


@dataclass(frozen=True, slots=True)
class Command:
    verb: str  # "view", "node", "job", an action name, or one of OTHER
    arg: str = ""


class CommandError(ValueError):
    pass


def parse_command(text: str) -> Command:
    words = text.strip().lstrip(":").split()
    if not words:
        raise CommandError("empty command (try :nodes, :jobs, :node NAME, :job ID, :help)")
    head, rest = words[0].lower(), words[1:]
    if len(rest) > 1:
        raise CommandError(f"too many arguments to :{head}")
    arg = rest[0] if rest else ""
    if head in ("node", "no", "n") and arg:
        return Command("node", arg)
    if head in ("job", "j") and arg:
        return Command("job", arg)
    if head in VIEWS:
        if arg:
            raise CommandError(f":{head} takes no argument")
        return Command("view", VIEWS[head])
    if head in ACTIONS or head in OTHER:
        if arg:
            raise CommandError(f":{head} takes no argument")
        return Command("quit" if head == "q" else head)
    raise CommandError(f"unknown command :{head} (try :nodes, :jobs, :node NAME, :job ID, :help)")


@dataclass(frozen=True, slots=True)
class RowFilter:
    """A ``/`` filter: a case-insensitive regex; a leading ``!`` keeps non-matching rows."""

    text: str
    pattern: re.Pattern[str] | None
    invert: bool

    def keep(self, haystack: str) -> bool:
        if self.pattern is None:
            return True
        return (self.pattern.search(haystack) is None) == self.invert


NO_FILTER = RowFilter("", None, False)


def parse_filter(text: str) -> RowFilter:
    """Raise ``CommandError`` (naming the problem) for an invalid regex."""
    raw = text.strip()
    invert = raw.startswith("!")
    body = raw[1:] if invert else raw
    if not body:
        return NO_FILTER
    try:
        pattern = re.compile(body, re.IGNORECASE)
    except re.error as err:
        raise CommandError(f"invalid filter /{raw}/: {err}") from None
    return RowFilter(raw, pattern, invert)
