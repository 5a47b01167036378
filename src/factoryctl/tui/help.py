"""The help screen's text, built from the bindings as remapped by the user's keymap."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich.text import Text
from textual.binding import Binding

from factoryctl.tui.commands import KNOWN


def help_text(bindings: Sequence[object], keymap: Mapping[str, str], can_act: bool) -> Text:
    """Every key (as remapped by ``keymap``, binding id -> key), the table keys, the
    commands and the filter syntax. ``can_act``: the actions backend is configured."""
    text = Text()
    text.append("factoryctl top: keys\n\n", style="bold")
    for key, binding in _bindings_by_id(bindings, keymap):
        if binding.action.startswith("act(") and not can_act:
            continue
        text.append(f"  {key:<14}", style="bold cyan")
        text.append(f"{binding.description}  [{binding.id}]\n")
    text.append("\nIn tables\n", style="bold")
    text.append("  up/down j/k    move   pgup/pgdn  page   home/end  jump\n")
    text.append("  enter          open the row   space  mark the row\n")
    text.append("  Shift+letter   sort by the column with that key (again: reverse)\n")
    text.append("    nodes: N name S state G GPUs U util P power T temp X XIDs R reason\n")
    text.append(
        "    jobs:  J id U user S state G GPUs R runtime M util I idle D idle for E kWh F flag\n"
    )
    text.append("    triage: V severity K kind N node G GPU U users S summary\n")
    text.append("\nCommands (:)\n", style="bold")
    text.append("  :overview :nodes :jobs :triage :rollouts :node NAME :job ID\n")
    text.append("  :pause :refresh :help :quit\n")
    if can_act:
        text.append("  :drain :resume :reboot :maint   act on marked nodes\n")
    text.append("\nFilter (/): a case-insensitive regex; !regex keeps rows that do not match.\n")
    text.append("Esc clears the filter, then goes back. ctrl+p opens the command palette.\n")
    text.append(f"\nKnown commands: {' '.join(KNOWN)}\n", style="dim")
    return text


def _bindings_by_id(
    bindings: Sequence[object], keymap: Mapping[str, str]
) -> Iterable[tuple[str, Binding]]:
    for b in bindings:
        if isinstance(b, Binding) and b.id:
            yield keymap.get(b.id, b.key), b
