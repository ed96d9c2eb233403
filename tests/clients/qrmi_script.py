"""QRMI's full flow against the server, run inside the QRMI venv (tests/clients/test_qrmi.py).

Usage: ``python qrmi_script.py RESOURCE_TYPE BACKEND INPUTS.json``. The server is named only by
QRMI's own ``{BACKEND}_QRMI_IBM_{QRS|QCS}_*`` environment variables, set by the caller.
``INPUTS.json`` is ``[{"name", "program_id", "input"}]``: primitive inputs as a user writes them
(OpenQASM 3 or QPY circuits). Prints one JSON object with what each step returned; any step that
raises ends the script with the error on stderr and exit status 1.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from qrmi import Payload, QuantumResource, ResourceType, TaskStatus

TYPES = {
    "qiskit-runtime-service": ResourceType.IBMQiskitRuntimeService,
    "ibm-quantum-compute-service": ResourceType.IBMQuantumComputeService,
}
FINAL = (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled)


def _status(resource: QuantumResource) -> dict[str, Any]:
    status = resource.status()
    fields = {name: getattr(status, name) for name in dir(status) if not name.startswith("_")}
    return {name: str(value) for name, value in fields.items() if not callable(value)}


def main(kind: str, backend: str, inputs_path: str) -> dict[str, Any]:
    with open(inputs_path, encoding="utf-8") as handle:
        inputs = json.load(handle)
    resource = QuantumResource(backend, TYPES[kind])
    out: dict[str, Any] = {"status": _status(resource), "accessible": resource.is_accessible()}
    token = resource.acquire()
    out["acquired"] = bool(token)
    target = json.loads(resource.target().value)
    out["target_keys"] = sorted(target)
    tasks: dict[str, Any] = {}
    for item in (item for item in inputs if item["name"] != "slow"):
        task_id = resource.task_start(Payload.QiskitPrimitive(input=item["input"], program_id=item["program_id"]))
        deadline = time.monotonic() + 180
        while (state := resource.task_status(task_id)) not in FINAL and time.monotonic() < deadline:
            time.sleep(0.5)
        entry: dict[str, Any] = {"id": task_id, "status": str(state)}
        if state == TaskStatus.Completed:
            entry["result"] = resource.task_result(task_id).value
        entry["logs"] = resource.task_logs(task_id)
        resource.task_stop(task_id)  # a finished task: nothing to cancel, the call must still succeed
        entry["status_after_stop"] = str(resource.task_status(task_id))
        tasks[item["name"]] = entry
    out["tasks"] = tasks
    # task_stop of a running task: started, stopped at once, then final.
    slow = next(item for item in inputs if item["name"] == "slow")
    task_id = resource.task_start(Payload.QiskitPrimitive(input=slow["input"], program_id=slow["program_id"]))
    resource.task_stop(task_id)
    deadline = time.monotonic() + 60
    while (state := resource.task_status(task_id)) not in FINAL and time.monotonic() < deadline:
        time.sleep(0.5)
    out["stopped"] = str(state)
    resource.release(token)
    out["released"] = True
    out["status_after"] = _status(resource)
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
