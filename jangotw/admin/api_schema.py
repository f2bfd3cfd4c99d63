# -*- test-case-name: tests.admin.test_api -*-
"""What an admin API route accepts: its JSON body and query fields, checked and described once.

A L{Fields} both checks a request (unknown fields, missing ones, wrong types:
each refusal a L{FieldError} naming the field) and describes it as a JSON
Schema for the OpenAPI document, so the document cannot drift from what the
handlers accept.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import attrs
from attrs import frozen

from ..model import AccountSettings

__all__ = ["Field", "Fields", "FieldError", "STRING", "INTEGER", "BOOLEAN", "STRINGS", "SETTINGS"]

STRING = "string"
INTEGER = "integer"
BOOLEAN = "boolean"
STRINGS = "strings"  # an array of strings

_TYPE_NAMES = {STRING: "a string", INTEGER: "a whole number", BOOLEAN: "true or false",
               STRINGS: "an array of strings"}


class FieldError(Exception):
    """A request refused because of one field (or the body as a whole when C{field} is None)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@frozen
class Field:
    """One member of a JSON body or one query parameter.

    @ivar audited: its value names what the call acts on, so the audit log records it (never
        set for passwords, codes or tokens).
    """

    name: str
    kind: str
    description: str
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    audited: bool = False

    def schema(self) -> dict[str, Any]:
        """This field as a JSON Schema (2020-12, as OpenAPI 3.1 uses it)."""
        described: dict[str, Any] = {"description": self.description}
        if self.kind == STRINGS:
            return {"type": "array", "items": {"type": "string"}, **described}
        described["type"] = self.kind
        if self.choices:
            described["enum"] = list(self.choices)
        if self.minimum is not None:
            described["minimum"] = self.minimum
        if self.maximum is not None:
            described["maximum"] = self.maximum
        return described

    def check(self, value: Any) -> Any:
        """The value if it has this field's type and range.

        @raise FieldError: C{wrong_type} or C{invalid_value}, naming the field.
        """
        valid = {
            STRING: isinstance(value, str),
            INTEGER: isinstance(value, int) and not isinstance(value, bool),
            BOOLEAN: isinstance(value, bool),
            STRINGS: isinstance(value, list) and all(isinstance(item, str) for item in value),
        }[self.kind]
        if not valid:
            raise FieldError("wrong_type", f"{self.name} must be {_TYPE_NAMES[self.kind]}", self.name)
        if self.choices and value not in self.choices:
            raise FieldError("invalid_value", f"{self.name} must be one of {', '.join(self.choices)}", self.name)
        if self.minimum is not None and value < self.minimum:
            raise FieldError("invalid_value", f"{self.name} must be at least {self.minimum}", self.name)
        if self.maximum is not None and value > self.maximum:
            raise FieldError("invalid_value", f"{self.name} must be at most {self.maximum}", self.name)
        return value

    def from_text(self, text: str) -> Any:
        """A query parameter's text as this field's type, checked."""
        if self.kind == INTEGER:
            if not text.strip().isdigit():
                raise FieldError("wrong_type", f"{self.name} must be {_TYPE_NAMES[INTEGER]}", self.name)
            return self.check(int(text))
        if self.kind == BOOLEAN:
            if text not in ("true", "false"):
                raise FieldError("wrong_type", f"{self.name} must be {_TYPE_NAMES[BOOLEAN]}", self.name)
            return text == "true"
        return self.check(text)


@frozen
class Fields:
    """The fields of a JSON object body, or of a query string."""

    fields: tuple[Field, ...] = ()

    @property
    def names(self) -> list[str]:
        return [field.name for field in self.fields]

    def schema(self) -> dict[str, Any]:
        """A JSON Schema object: these properties, the required ones, nothing else."""
        return {
            "type": "object",
            "properties": {field.name: field.schema() for field in self.fields},
            "required": [field.name for field in self.fields if field.required],
            "additionalProperties": False,
        }

    def parse_json(self, raw: bytes) -> dict[str, Any]:
        """The checked members of a JSON object body (an empty body is an empty object).

        @raise FieldError: C{bad_json} (not UTF-8 JSON, or not an object), C{unknown_field},
            C{missing_field}, C{wrong_type} or C{invalid_value}.
        """
        if not raw.strip():
            document: Any = {}
        else:
            try:
                document = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                raise FieldError("bad_json", f"the body is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise FieldError("bad_json", "the body must be a JSON object")
        return self._checked(document, lambda field, value: field.check(value))

    def parse_query(self, args: Mapping[bytes, Sequence[bytes]]) -> dict[str, Any]:
        """The checked query parameters (each given at most once).

        @raise FieldError: as for L{parse_json}, and C{bad_query} for undecodable or repeated ones.
        """
        document: dict[str, str] = {}
        for raw_name, values in args.items():
            try:
                name = raw_name.decode("utf-8")
                texts = [value.decode("utf-8") for value in values]
            except UnicodeDecodeError:
                raise FieldError("bad_query", "the query string is not UTF-8") from None
            if len(texts) != 1:
                raise FieldError("bad_query", f"{name} is given more than once", name)
            document[name] = texts[0]
        return self._checked(document, lambda field, text: field.from_text(text))

    def _checked(self, document: Mapping[str, Any], check: Any) -> dict[str, Any]:
        known = {field.name: field for field in self.fields}
        for name in document:
            if name not in known:
                expected = f" (known: {', '.join(known)})" if known else " (this route takes none)"
                raise FieldError("unknown_field", f"unknown field {name!r}{expected}", name)
        for field in self.fields:
            if field.required and field.name not in document:
                raise FieldError("missing_field", f"{field.name} is required", field.name)
        return {name: check(known[name], value) for name, value in document.items()}


def _setting_field(setting: attrs.Attribute) -> Field:  # type: ignore[type-arg]
    kind = {"bool": BOOLEAN, "int": INTEGER}.get(str(setting.type), STRING)
    return Field(setting.name, kind, setting.metadata["doc"], choices=tuple(setting.metadata.get("choices", ())),
                 minimum=0 if kind == INTEGER else None, audited=True)


#: The body of a settings change: every account setting, typed as L{AccountSettings} declares it.
SETTINGS = Fields(tuple(_setting_field(setting) for setting in attrs.fields(AccountSettings)))
