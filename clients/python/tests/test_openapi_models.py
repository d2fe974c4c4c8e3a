"""The client against openapi.json, so neither can change alone: every model's fields (names,
which are required, types) against the schema it names; every schema and inline object of the
document mirrored by a model; every operation called by a method of both clients that takes
its query parameters and body fields and returns its answer's model. No daemon needed."""
from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import types
import typing
from datetime import datetime
from typing import Any, Literal, Union

import pytest

import kioskd
from kioskd import AsyncKioskd, Kioskd, OPERATIONS, TaskState
from kioskd.models import MODELS, field_types

from conftest import openapi_path

DOC = json.loads(openapi_path().read_text())
SCALARS = {str: "string", int: "integer", bool: "boolean", float: "number"}


def resolve(pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = DOC
    for part in pointer[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def deref(schema: dict) -> dict:
    while "$ref" in schema:
        schema = resolve(schema["$ref"])
    return schema


def json_type(value: Any) -> str:
    return {str: "string", int: "integer", bool: "boolean", type(None): "null", float: "number"}[type(value)]


def schema_types(schema: dict) -> set[str]:
    schema = deref(schema)
    if "type" in schema:
        t = schema["type"]
        return set(t) if isinstance(t, list) else {t}
    if "enum" in schema:
        return {json_type(v) for v in schema["enum"]}
    if "const" in schema:
        return {json_type(schema["const"])}
    return set()


def is_union(tp: Any) -> bool:
    return typing.get_origin(tp) is Union or isinstance(tp, types.UnionType)


def split_optional(tp: Any) -> tuple[Any, bool]:
    if is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        assert len(args) == 1, f"only X | None unions are supported: {tp}"
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def model_of(tp: Any) -> type | None:
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def type_problems(hint: Any, schema: dict, where: str) -> list[str]:
    """What differs between a Python type (without its None) and a schema."""
    schema = deref(schema)
    kinds = schema_types(schema) - {"null"}
    values = [v for v in schema.get("enum", [schema["const"]] if "const" in schema else []) if v is not None]
    origin = typing.get_origin(hint)
    if origin is Literal:
        if set(typing.get_args(hint)) != set(values):
            return [f"{where}: Literal{list(typing.get_args(hint))} but the document allows {values}"]
        return []
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        members = [m.value for m in hint]
        return [] if set(members) == set(values) else [f"{where}: {hint.__name__} is {members}, the document {values}"]
    if values:
        return [f"{where}: the document has the choices {values}, the model {hint!r}"]
    if hint is datetime:
        ok = kinds == {"string"} and schema.get("format") == "date-time"
        return [] if ok else [f"{where}: datetime, but the document says {kinds} format {schema.get('format')}"]
    if hint in SCALARS:
        ok = kinds == {SCALARS[hint]} and schema.get("format") != "date-time"
        return [] if ok else [f"{where}: {hint.__name__}, but the document says {sorted(kinds)} {schema.get('format') or ''}"]
    if model_of(hint):
        problems = [] if kinds == {"object"} else [f"{where}: {hint.__name__}, but the document says {sorted(kinds)}"]
        if resolve(hint.__openapi__) is not schema:
            problems.append(f"{where}: {hint.__name__}.__openapi__ ({hint.__openapi__}) is not this schema")
        return problems
    if origin is dict or hint is dict:
        if kinds != {"object"}:
            return [f"{where}: an object, but the document says {sorted(kinds)}"]
        if schema.get("properties"):
            return [f"{where}: a dict, but the document lists its fields {sorted(schema['properties'])}: make it a model"]
        return []
    if origin is list:
        if kinds != {"array"}:
            return [f"{where}: a list, but the document says {sorted(kinds)}"]
        (item,) = typing.get_args(hint)
        return type_problems(item, schema.get("items", {}), where + "[]")
    return [f"{where}: no rule for {hint!r}"]


def model_problems(cls: type) -> list[str]:
    schema = deref(resolve(cls.__openapi__))
    name = cls.__name__
    problems: list[str] = []
    if schema_types(schema) - {"null"} != {"object"}:
        problems.append(f"{name}: its schema is not an object")
    properties: dict = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    for missing in sorted(set(properties) - set(fields)):
        problems.append(f"{name}: the document has '{missing}', the model not")
    for extra in sorted(set(fields) - set(properties)):
        problems.append(f"{name}: the model has '{extra}', the document not")
    for field_name in sorted(set(fields) & set(properties)):
        f = fields[field_name]
        where = f"{name}.{field_name}"
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if (field_name in required) == has_default:
            problems.append(f"{where}: required in the document: {field_name in required}; in the model: {not has_default}")
        hint, optional = split_optional(hints[field_name])
        nullable = "null" in schema_types(properties[field_name]) or None in properties[field_name].get("enum", [])
        if nullable and not optional:
            problems.append(f"{where}: the document allows null, the model's type not")
        if optional and not nullable and field_name in required:
            problems.append(f"{where}: required and never null in the document, but optional in the model")
        if not optional and not has_default and field_name not in required:
            problems.append(f"{where}: may be absent, but its type has no None")
        problems += type_problems(hint, properties[field_name], where)
    return problems


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_each_model_matches_its_schema(cls: type) -> None:
    assert hasattr(cls, "__openapi__"), f"{cls.__name__} names no schema"
    problems = model_problems(cls)
    assert not problems, "\n".join(problems)


def test_task_states_match_the_document() -> None:
    assert [s.value for s in TaskState] == resolve(TaskState.__openapi__)["enum"]


def test_every_model_is_checked() -> None:
    exported = {getattr(kioskd.models, n) for n in kioskd.models.__all__}
    models = {c for c in exported if model_of(c)}
    assert models == set(MODELS), "a model missing from MODELS is not held to the document"


def object_schemas() -> list[tuple[str, dict]]:
    """Every schema in the document that lists fields: components and inline bodies/answers."""
    found = []
    for name, schema in DOC["components"]["schemas"].items():
        found.append((f"#/components/schemas/{name}", schema))
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            base = "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:
                found.append((base + "/requestBody/content/application~1json/schema", body))
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None:
                    found.append((base + f"/responses/{status}/content/application~1json/schema", schema))
    return found


def test_every_schema_of_the_document_has_a_model() -> None:
    mirrored = {id(resolve(c.__openapi__)) for c in MODELS} | {id(resolve(TaskState.__openapi__))}
    # The envelope of errors: KioskdError reads its `error` object (ErrorBody).
    mirrored.add(id(DOC["components"]["schemas"]["Error"]))
    missing = []
    for pointer, schema in object_schemas():
        if "$ref" in schema or id(schema) in mirrored:
            continue
        nested = [(f"{pointer}/properties/{k}", v) for k, v in schema.get("properties", {}).items()
                  if isinstance(v, dict) and v.get("properties")]
        for inner_pointer, inner in nested:
            if id(inner) not in mirrored:
                missing.append(inner_pointer)
        if schema.get("properties") or schema.get("enum"):
            missing.append(pointer)
    assert not missing, "schemas without a model in kioskd.models:\n" + "\n".join(missing)


def operations() -> list[Any]:
    return [pytest.param(op["operationId"], method.upper(), path, op, id=op["operationId"])
            for path, item in DOC["paths"].items() for method, op in item.items()]


def test_every_operation_has_a_method_in_both_clients() -> None:
    ids = {p.values[0] for p in operations()}
    assert not ids - set(OPERATIONS), f"operations no method calls: {sorted(ids - set(OPERATIONS))}"
    assert not set(OPERATIONS) - ids, f"methods of operations the document does not have: {sorted(set(OPERATIONS) - ids)}"
    for name in OPERATIONS.values():
        assert callable(getattr(Kioskd, name, None)), f"Kioskd.{name}"
        assert callable(getattr(AsyncKioskd, name, None)), f"AsyncKioskd.{name}"


@pytest.mark.parametrize("op_id,method,path,op", operations())
def test_each_method_takes_its_operations_parameters_and_returns_its_model(op_id: str, method: str, path: str, op: dict) -> None:
    assert op_id in OPERATIONS, f"no method calls {op_id} ({method} {path})"
    function = getattr(Kioskd, OPERATIONS[op_id])
    parameters = inspect.signature(function).parameters
    accepted = set(parameters) - {"self"}
    for p in op.get("parameters", []):
        if p["in"] == "path":
            assert p["name"] == "id" and list(parameters)[1] == "task_id", f"{function.__name__}(task_id, …)"
        elif p["in"] == "query":
            assert p["name"] in accepted, f"{function.__name__} has no '{p['name']}' (query)"
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        fields = set(deref(body).get("properties", {}))
        missing = fields - accepted
        assert not missing, f"{function.__name__} does not take {sorted(missing)} (body)"
    success = [a for s, a in op["responses"].items() if s.startswith("2")]
    returned = typing.get_type_hints(function)["return"]
    content = success[0].get("content", {})
    if "application/json" not in content:
        assert returned is str and "text/plain" in content
        return
    schema = content["application/json"]["schema"]
    for other in success[1:]:
        assert other["content"]["application/json"]["schema"] == schema, "one model per operation"
    target = deref(schema)
    if target.get("type") == "array":
        assert typing.get_origin(returned) is list, f"{function.__name__} returns a list"
        (returned,) = typing.get_args(returned)
        target = deref(target["items"])
    if model_of(returned):
        assert resolve(returned.__openapi__) is target, f"{function.__name__} returns {returned.__name__}"
    else:
        assert not target.get("properties"), f"{function.__name__} returns {returned!r} for a schema with fields"


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {n: inspect.signature(f) for n, f in vars(cls).items() if callable(f) and not n.startswith("_")}
    sync, asynchronous = public(Kioskd), public(AsyncKioskd)
    assert set(sync) - {"close"} == set(asynchronous) - {"aclose"}
    for name, signature in sync.items():
        if name == "close":
            continue
        other = asynchronous[name]
        assert list(signature.parameters.values()) == list(other.parameters.values()), name
        function = getattr(AsyncKioskd, name)
        assert inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function), f"AsyncKioskd.{name} is not async"


def test_create_task_takes_exactly_the_documents_fields() -> None:
    fields = set(resolve("#/components/schemas/CreateTask")["properties"])
    parameters = set(inspect.signature(Kioskd.create_task).parameters) - {"self", "wait"}
    assert parameters == fields
