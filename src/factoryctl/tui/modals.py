"""The confirm-with-reason dialog for actions, and the help screen."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from factoryctl.tui.backend import ActionPlan

MAX_LISTED = 12


def plan_text(plan: ActionPlan) -> Text:
    text = Text()
    text.append(f"{plan.action.value} ", style="bold")
    text.append(f"{len(plan.nodes)} node(s): ", style="bold")
    shown = ", ".join(plan.nodes[:MAX_LISTED])
    more = len(plan.nodes) - MAX_LISTED
    text.append(shown + (f" … and {more} more" if more > 0 else "") + "\n")
    if plan.gpus_lost >= 0:
        text.append(f"GPUs out of service: {plan.gpus_lost}\n")
    else:
        text.append(f"GPUs back in service: {-plan.gpus_lost}\n")
    if plan.jobs:
        users = ", ".join(plan.users)
        text.append(f"jobs affected: {len(plan.jobs)}  users: {users}\n", style="yellow")
        for job in plan.jobs[:MAX_LISTED]:
            text.append(f"  {job.job_id} {job.user} ({job.gpus} GPU(s) here)\n")
        if len(plan.jobs) > MAX_LISTED:
            text.append(f"  … and {len(plan.jobs) - MAX_LISTED} more\n")
    else:
        text.append("jobs affected: none\n")
    for note in plan.notes:
        text.append(f"note: {note}\n", style="yellow")
    if plan.refused:
        text.append(f"REFUSED: {plan.refused}\n", style="bold red")
    text.rstrip()
    return text


class ActionModal(ModalScreen[str | None]):
    """Shows the plan, takes a reason, confirms. Dismisses with the reason or None."""

    DEFAULT_CSS = """
    ActionModal { align: center middle; }
    ActionModal > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 90%;
        border: thick $warning; background: $surface; padding: 0 1;
    }
    ActionModal VerticalScroll { height: auto; max-height: 14; }
    ActionModal #error { color: $error; height: auto; }
    ActionModal Horizontal { height: auto; align-horizontal: right; }
    ActionModal Button { margin-left: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, plan: ActionPlan) -> None:
        super().__init__()
        self.plan = plan

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(f"Confirm {self.plan.action.value}", style="bold"))
            with VerticalScroll():
                yield Static(plan_text(self.plan), id="plan")
            yield Input(placeholder="reason (required, logged)", id="reason")
            yield Static("", id="error")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button(
                    f"Confirm {self.plan.action.value}",
                    id="confirm",
                    variant="error",
                    disabled=bool(self.plan.refused),
                )

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.action_cancel()

    def error(self, message: str) -> None:
        self.query_one("#error", Static).update(message)
        say = getattr(self.app, "say", None)  # FactoryApp records what it tells the user
        if callable(say):
            say(message, "error")
        else:
            self.app.notify(message, severity="error")

    def action_confirm(self) -> None:
        if self.plan.refused:
            self.error(f"refused: {self.plan.refused}")
            return
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.error("a reason is required: say why, it goes to the audit log")
            return
        self.dismiss(reason)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 72; max-width: 100%; height: 90%; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, text: Text) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(self.text)

    def action_close(self) -> None:
        self.dismiss(None)
