"""A definition written as JSON on the dashboard (a pipeline's, a job's): the text area
holds the body the API's create or replace takes, decoded with msgspec into the API's own
request schema, so a bad one is the API's status and message. A refusal re-renders the
form with that answer above the text as typed (nothing is lost); anything else is the
error page. An edit form carries the version it was read at, so saving over someone
else's newer version is the API's answer to a stale If-Match, not an overwrite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException

from api.ui.views import api_error, page
from application.errors import PermissionDenied, RateLimited, VersionConflict
from domain.errors import DomainError

# Refusals shown on the form with the text kept; anything else is the error page.
REFUSALS = (ValidationException, DomainError, VersionConflict, PermissionDenied, RateLimited)
S = TypeVar("S", bound=msgspec.Struct)


def decode_json(text: str, schema: type[S]) -> S:
    """The text as the API decodes the same body (litestar names it `data`): not JSON is
    its 400, a bad field its 422 naming the field, each with the API's message."""
    try:
        return msgspec.json.decode(text.encode(), type=schema)
    except msgspec.DecodeError as error:  # ValidationError included: both are the API's
        raise ValidationException(
            "Validation failed", extra=[{"message": str(error), "key": "data", "source": "body"}]
        ) from None


def read_version(data: dict[str, str]) -> int | None:
    """The version an edit form was read at (its If-Match)."""
    raw = data.get("version", "")
    return int(raw) if raw.isdigit() else None


@dataclass(frozen=True)
class Editor:
    """One kind of definition's form: its words and where it goes back to."""

    title: str
    save: str
    api_route: str
    fields: str  # HTML: the body's fields, as the API documents them
    hint: str = ""  # HTML
    delete_label: str = ""  # an edit form's Delete button, if it has one
    delete_note: str = ""

    def render(
        self,
        request: Request,
        *,
        text: str,
        action: str,
        cancel: str,
        version: int | None = None,
        error: Exception | None = None,
        delete_action: str | None = None,
    ) -> Response[Any]:
        status, shown = (200, None) if error is None else api_error(request, error)
        return page(
            request,
            "definition_editor.html",
            status=status,
            text=text,
            action=action,
            cancel=cancel,
            version=version,
            error=shown,
            title=self.title,
            save=self.save,
            api_route=self.api_route,
            fields=self.fields,
            hint=self.hint,
            delete_action=delete_action if self.delete_label else None,
            delete_label=self.delete_label,
            delete_note=self.delete_note,
        )
