"""The start-up check that the configured simulation device (``QRS_DEVICE``) exists here.

``AerSimulator(device="GPU")`` is accepted on a machine without a GPU and fails only when a
job runs, so a mis-deployed GPU worker would fail every job it picks up. The worker asks Aer
for its devices once, in a short-lived child (the worker process itself never imports qiskit),
and refuses to start when the device is missing.
"""

from __future__ import annotations

import multiprocessing

DEVICES = ("CPU", "GPU")


class DeviceUnavailable(RuntimeError):
    """``QRS_DEVICE`` names a device this machine's qiskit-aer cannot use."""


def aer_devices() -> tuple[str, ...]:
    """``AerSimulator().available_devices()``: what this process' qiskit-aer can simulate on."""
    from qiskit_aer import AerSimulator

    return tuple(str(d).upper() for d in AerSimulator().available_devices())


def require_device(device: str) -> None:
    """Return if qiskit-aer can simulate on ``device``.

    Raises:
        DeviceUnavailable: unknown device name, or no such device on this machine (for ``GPU``:
            no CUDA device visible, or ``qiskit-aer`` installed instead of ``qiskit-aer-gpu``).
    """
    wanted = device.upper()
    if wanted not in DEVICES:
        raise DeviceUnavailable(f"QRS_DEVICE={device!r} is not one of {', '.join(DEVICES)}.")
    if wanted == "CPU":
        return
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        found = pool.apply(aer_devices)
    if wanted not in found:
        raise DeviceUnavailable(
            f"QRS_DEVICE={wanted} but qiskit-aer here can only use {', '.join(found) or 'no device'}: "
            "install qiskit-aer-gpu (the worker image's gpu target), give the container a GPU "
            "(compose device_ids / CUDA_VISIBLE_DEVICES), or set QRS_DEVICE=CPU."
        )
