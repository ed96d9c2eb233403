"""Per-job bounds, checked on a job's ``params`` before anything decodes or simulates them.

A small body can ask for a lot of memory: ``RuntimeDecoder`` inflates zlib+base64 blobs
(ndarrays, QPY circuits) blindly and builds ``qiskit.quantum_info`` operators from their
``settings`` (an ``Operator`` of a 13-qubit circuit is a 2^13 x 2^13 complex matrix, from a
768-byte body), and the programs allocate per PUB, per parameter value and per shot. This module
reads ``params`` as plain JSON, without qiskit or numpy, so the API (``POST /jobs``, 400/413) and
the simulation process (before ``RuntimeDecoder`` runs) refuse the same inputs with the same
message. Blobs are inflated in bounded chunks (``zlib.decompressobj(...).decompress(data,
max_length)``) and thrown away: only their size and, for ndarrays, the ``.npy`` header are kept.

What is bounded (:class:`JobLimits`, settings ``QRS_MAX_*``):

* ``max_decoded_bytes``: the bytes the job's encoded ndarrays and circuits inflate to, summed;
* ``max_pubs``: PUBs of a sampler/estimator job, items of an executor job;
* ``max_parameter_values``: parameter values summed over the PUBs (elements of their arrays);
* ``max_job_shots``: bindings x shots summed over the PUBs of a sampler job (items x shots for
  an executor job); an estimator's cost is set by its precision, not shots, and is not counted.

Structural rules: ``spmatrix`` values (an ``.npz`` zip, inflated by scipy without a bound) are
refused, and a ``qiskit.quantum_info.operators`` ``settings`` object may hold no circuit,
instruction or other operator (the client encodes operators from their arrays and Pauli labels;
only a hand-made body nests them, to have the server expand them into dense matrices).
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import msgspec

from qiskit_runtime_server.shared.errors import InvalidRequest, PayloadTooLarge

# Inflate in slices of this many bytes: the memory the check itself needs per blob.
_CHUNK = 1 << 20
# ``settings`` classes that may appear inside an operator's settings: label containers.
_NESTABLE_SETTINGS = frozenset({"Pauli", "PauliList"})
_OPERATOR_MODULE = "qiskit.quantum_info.operators"
_COMPRESSED_TYPES = frozenset({"ndarray", "QuantumCircuit", "Instruction"})
_FLOAT = 0.0


def _any_float(text: str) -> float:
    return _FLOAT


@dataclass(frozen=True)
class JobLimits:
    """The bounds of one job; see the module docstring. ``default_shots`` prices PUBs without shots."""

    max_pubs: int = 10_000
    max_parameter_values: int = 10_000_000
    max_job_shots: int = 10_000_000
    max_decoded_bytes: int = 256 * 2**20
    default_shots: int = 4096


class JobLimitExceeded(InvalidRequest):
    """The job asks for more than :class:`JobLimits` allows (400); the message says which bound."""


class DecodedTooLarge(PayloadTooLarge):
    """The job's encoded values inflate past ``max_decoded_bytes`` (413)."""


@dataclass
class _Walk:
    limits: JobLimits
    decoded: int = 0
    # id() of each ndarray object -> its shape, read from the JSON nesting or the .npy header.
    shapes: dict[int, tuple[int, ...]] | None = None


def check_params(params: bytes | str, program_id: str, limits: JobLimits) -> None:
    """Refuse ``params`` (the ``params`` JSON of ``POST /jobs``) that exceed ``limits``.

    Cost: one JSON parse plus one bounded inflation of each blob; memory: the parsed tree (about
    twice the text for arrays of numbers) plus :data:`_CHUNK`.

    Raises:
        JobLimitExceeded: too many PUBs, parameter values or shots, or a forbidden structure (400).
        DecodedTooLarge: the encoded values inflate past ``limits.max_decoded_bytes`` (413).
        InvalidRequest: the JSON or one of its blobs is malformed (400).
    """
    _check_counts_outline(params, program_id, limits)  # before the full parse: a fast count
    try:
        # Every float becomes one shared object: the values are not needed, and a body of plain
        # numbers then takes about twice its size here, not ten times (msgspec, or json's floats).
        tree = json.loads(params, parse_float=_any_float)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidRequest(f"params is not valid JSON: {exc}") from None
    if isinstance(tree, dict):
        _check_counts(tree, program_id, limits)  # cheap, so first: before any blob is inflated
    walk = _Walk(limits, shapes={})
    _visit(tree, walk)
    if not isinstance(tree, dict):
        return
    if program_id == "executor":
        _check_executor(tree, limits)
    elif program_id in ("sampler", "estimator"):
        _check_pubs(tree, program_id, walk)


def _visit(root: Any, walk: _Walk) -> None:
    # Iterative: a deeply nested body must not exhaust the interpreter stack.
    # Only containers are pushed: a list of a million numbers adds nothing to the stack.
    stack: list[tuple[Any, bool]] = [(root, False)] if isinstance(root, (list, dict)) else []
    while stack:
        node, in_operator = stack.pop()
        if isinstance(node, dict):
            kind = node.get("__type__")
            if isinstance(kind, str) and "__value__" in node:
                in_operator = _check_typed(node, kind, in_operator, walk)
            children = node.values()
        else:
            children = node
        stack.extend((child, in_operator) for child in children if isinstance(child, (list, dict)))


def _check_typed(node: dict[str, Any], kind: str, in_operator: bool, walk: _Walk) -> bool:
    """Account for one ``{"__type__", "__value__"}`` object; returns whether its children are in an operator."""
    value = node["__value__"]
    if kind == "spmatrix":
        raise JobLimitExceeded("Sparse matrices (spmatrix) are not accepted in params.")
    nested = kind in ("QuantumCircuit", "Instruction") or (
        kind == "settings" and node.get("__class__") not in _NESTABLE_SETTINGS
    )
    if in_operator and nested:
        raise JobLimitExceeded(
            f"An operator in params holds a {node.get('__class__', kind)}: operators must be sent as "
            "their matrix or Pauli terms, not built on the server from circuits or other operators."
        )
    if kind in _COMPRESSED_TYPES and isinstance(value, str):
        head = _inflate(value, walk, want_head=kind == "ndarray")
        if kind == "ndarray":
            assert walk.shapes is not None
            walk.shapes[id(node)] = _npy_shape(head)
    elif kind == "ndarray" and isinstance(value, list):
        assert walk.shapes is not None
        walk.shapes[id(node)] = _list_shape(value)
    if kind == "settings" and str(node.get("__module__", "")).startswith(_OPERATOR_MODULE):
        return True
    return in_operator


def _inflate(text: str, walk: _Walk, *, want_head: bool) -> bytes:
    """Count the inflated size of one zlib+base64 blob against the job's budget; the first chunk if ``want_head``."""
    try:
        data = base64.standard_b64decode(text)
    except (binascii.Error, ValueError):
        raise InvalidRequest("params holds an encoded value that is not valid base64.") from None
    inflater = zlib.decompressobj()
    head = b""
    budget = walk.limits.max_decoded_bytes
    try:
        while data:
            chunk = inflater.decompress(data, _CHUNK)
            data = inflater.unconsumed_tail
            if want_head and not head:
                head = chunk
            walk.decoded += len(chunk)
            if walk.decoded > budget:
                raise DecodedTooLarge(
                    f"The encoded arrays and circuits of this job inflate to more than {budget} bytes "
                    "(QRS_MAX_DECODED_BYTES)."
                )
            if inflater.eof or not chunk:
                break
    except zlib.error:
        raise InvalidRequest("params holds an encoded value that is not valid zlib data.") from None
    return head


def _npy_shape(head: bytes) -> tuple[int, ...]:
    """The shape in a ``.npy`` header (numpy's format 1.0-3.0), read without numpy."""
    if not head.startswith(b"\x93NUMPY") or len(head) < 10:
        raise InvalidRequest("params holds an ndarray that is not in .npy format.")
    if head[6] == 1:
        size, start = int.from_bytes(head[8:10], "little"), 10
    else:
        size, start = int.from_bytes(head[8:12], "little"), 12
    try:
        header = ast.literal_eval(head[start : start + size].decode("latin1"))
        shape = tuple(int(n) for n in header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        raise InvalidRequest("params holds an ndarray with an unreadable .npy header.") from None
    return shape


def _list_shape(value: Any) -> tuple[int, ...]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _values_shape(value: Any, walk: _Walk) -> tuple[tuple[int, ...], int]:
    """(bindings shape, number of parameter values) of a PUB's ``parameter_values`` entry."""
    assert walk.shapes is not None
    if value is None:
        return (), 0
    if isinstance(value, dict) and value.get("__type__") == "BindingsArray":
        inner = value.get("__value__") or {}
        shape = tuple(int(n) for n in inner.get("shape") or ()) if isinstance(inner, dict) else ()
        data = inner.get("data") if isinstance(inner, dict) else None
        arrays = list(data.values()) if isinstance(data, dict) else []
        count = sum(math.prod(walk.shapes.get(id(a), _list_shape(a))) for a in arrays)
        return shape, count
    array_shape = walk.shapes.get(id(value)) if isinstance(value, dict) else _list_shape(value)
    if array_shape is None:
        return (), 0
    return array_shape[:-1], math.prod(array_shape)


class _ProgramOutline(msgspec.Struct):
    items: list[msgspec.Raw] | None = None


class _Outline(msgspec.Struct):
    """The lists whose length is bounded, as raw slices of the text: counted without building them."""

    pubs: list[msgspec.Raw] | None = None
    quantum_program: _ProgramOutline | None = None


_decode_outline = msgspec.json.Decoder(_Outline).decode


def _check_counts_outline(params: bytes | str, program_id: str, limits: JobLimits) -> None:
    try:
        outline = _decode_outline(params)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return  # some other shape (or not JSON): the full parse and the programs report it
    if program_id == "executor" and outline.quantum_program is not None:
        _check_counts({"quantum_program": {"items": outline.quantum_program.items}}, program_id, limits)
    elif outline.pubs is not None:
        _check_counts({"pubs": outline.pubs}, program_id, limits)


def _check_counts(tree: dict[str, Any], program_id: str, limits: JobLimits) -> None:
    if program_id == "executor":
        program = tree.get("quantum_program")
        items = program.get("items") if isinstance(program, dict) else None
        if isinstance(items, list) and len(items) > limits.max_pubs:
            raise JobLimitExceeded(
                f"The program has {len(items)} items; at most {limits.max_pubs} are allowed (QRS_MAX_PUBS)."
            )
        return
    pubs = tree.get("pubs")
    if isinstance(pubs, list) and len(pubs) > limits.max_pubs:
        raise JobLimitExceeded(f"The job has {len(pubs)} PUBs; at most {limits.max_pubs} are allowed (QRS_MAX_PUBS).")


def _check_pubs(tree: dict[str, Any], program_id: str, walk: _Walk) -> None:
    limits = walk.limits
    pubs = tree.get("pubs")
    if not isinstance(pubs, list):
        return
    options = tree.get("options")
    default_shots = options.get("default_shots") if isinstance(options, dict) else None
    if not isinstance(default_shots, int) or isinstance(default_shots, bool):
        default_shots = limits.default_shots
    values_total = shots_total = 0
    for pub in pubs:
        if not isinstance(pub, list):
            continue
        index = 1 if program_id == "sampler" else 2
        shape, count = _values_shape(pub[index] if len(pub) > index else None, walk)
        values_total += count
        if values_total > limits.max_parameter_values:
            raise JobLimitExceeded(
                f"The job's PUBs hold more than {limits.max_parameter_values} parameter values "
                "(QRS_MAX_PARAMETER_VALUES)."
            )
        if program_id == "sampler":
            shots = pub[2] if len(pub) > 2 and isinstance(pub[2], int) and pub[2] > 0 else default_shots
            shots_total += math.prod(shape) * shots
            if shots_total > limits.max_job_shots:
                raise JobLimitExceeded(
                    f"The job asks for more than {limits.max_job_shots} shots in all (parameter bindings x shots, "
                    "summed over its PUBs; QRS_MAX_JOB_SHOTS)."
                )


def _check_executor(tree: dict[str, Any], limits: JobLimits) -> None:
    program = tree.get("quantum_program")
    if not isinstance(program, dict) or not isinstance(program.get("items"), list):
        return
    items = len(program["items"])
    shots = program.get("shots")
    if isinstance(shots, int) and items * shots > limits.max_job_shots:
        raise JobLimitExceeded(
            f"The program asks for {items} items x {shots} shots; at most {limits.max_job_shots} shots in all "
            "are allowed (QRS_MAX_JOB_SHOTS)."
        )
