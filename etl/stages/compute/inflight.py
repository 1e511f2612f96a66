"""Batches in flight on the device: each submitted at once, its vectors collected later.

Submitting a batch on a GPU enqueues its forward pass and pooling on the device's current
stream, then, on a copy stream that waits for them (an event), a copy of each result column
into pinned host buffers, and records an event; collecting a batch waits for that event only.
So the device computes the next batches while the host places this one's vectors, and nothing
waits for the whole device. Pinned buffers are recycled from batch to batch: pinning costs a
system call and memory the OS cannot page, so a buffer grows rarely, in powers of two, and at
most DEPTH + 1 sets of them exist (a token column's set is (B, T, H) float32, at most the token
budget x H floats: 50 MB for 32,768 tokens of a 384-wide model). On a CPU the same objects run
with no stream and no event: the results are in their host buffers when submit returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from etl.contract import Batch

# Batches left queued on the device while the host finishes the oldest one: one to compute
# while the next is launched, one spare for a host step that takes longer than usual.
DEPTH = 2

Forward = Callable[[Batch], dict[str, torch.Tensor]]  # float32 results, on the device


class HostSlot:
    """One batch's host buffers, one per result column, reused by batch after batch."""

    def __init__(self, pinned: bool) -> None:
        self.pinned = pinned
        self.buffers: dict[str, torch.Tensor] = {}

    def view(self, name: str, shape: torch.Size) -> torch.Tensor:
        """A float32 tensor of ``shape`` over the column's buffer, grown when too small."""
        numel = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            size = 1 << max(numel - 1, 0).bit_length()  # the next power of two
            buffer = torch.empty(size, dtype=torch.float32, pin_memory=self.pinned)
            self.buffers[name] = buffer
        return buffer[:numel].view(shape)


@dataclass
class Submitted:
    """A batch on its way: its results land in ``host`` once ``copied`` has happened."""

    batch: Batch
    slot: HostSlot | None = None  # None: an empty batch, or already released
    host: dict[str, torch.Tensor] = field(default_factory=dict)
    started: torch.cuda.Event | None = None  # on the compute stream, before the inputs' copy
    computed: torch.cuda.Event | None = None  # after pooling
    copied: torch.cuda.Event | None = None  # after the copies to the host

    def wait(self) -> None:
        """Until this batch's results are on the host (only this batch's: not the device)."""
        if self.copied is not None:
            self.copied.synchronize()

    @property
    def device_seconds(self) -> float:
        """How long the device computed this batch, by its events (0 without them). Call
        after wait(): the events are then complete."""
        if self.started is None or self.computed is None:
            return 0.0
        return self.started.elapsed_time(self.computed) / 1000.0


class InFlight:
    """Turns batches into vectors without waiting for them: ``submit``, later ``collect``,
    then ``release`` once the vectors were used (their buffers go to the next batch)."""

    def __init__(self, forward: Forward, device: torch.device) -> None:
        self.forward = forward
        self.device = device
        self.cuda = device.type == "cuda"
        self.copies = torch.cuda.Stream(device) if self.cuda else None
        self.free: list[HostSlot] = []  # slots no batch in flight writes to
        self.depth = DEPTH

    def submit(self, batch: Batch) -> Submitted:
        """Start the batch's forward pass; on a CPU it is done when this returns."""
        if not batch.size:
            return Submitted(batch)  # a window's rows that need no model: nothing to compute
        # A slot whose submit failed is not taken back: a copy into it may be under way.
        slot = self.free.pop() if self.free else HostSlot(pinned=self.cuda)
        if self.copies is None:
            host = {}
            for name, values in self.forward(batch).items():
                host[name] = slot.view(name, values.shape).copy_(values)
            return Submitted(batch, slot, host)
        return self._submit_cuda(batch, slot, self.copies)

    def _submit_cuda(self, batch: Batch, slot: HostSlot, copies: torch.cuda.Stream) -> Submitted:
        compute = torch.cuda.current_stream(self.device)
        started = torch.cuda.Event(enable_timing=True)
        computed = torch.cuda.Event(enable_timing=True)
        copied = torch.cuda.Event(blocking=True)  # its wait sleeps: the core is the threads'
        started.record(compute)
        results = self.forward(batch)  # enqueued on `compute`
        computed.record(compute)
        host = {}
        with torch.cuda.stream(copies):
            copies.wait_event(computed)
            for name, values in results.items():
                host[name] = slot.view(name, values.shape)  # (B, D) or (B, T, H)
                host[name].copy_(values, non_blocking=True)
                # The allocator must not hand this memory to the compute stream's next batch
                # before the copy stream has read it.
                values.record_stream(copies)
            copied.record(copies)
        return Submitted(batch, slot, host, started, computed, copied)

    def collect(self, submitted: Submitted) -> dict[str, np.ndarray]:
        """The batch's vectors, name -> (B, D) or (B, T, H) float32: views of its host buffers,
        valid until ``release``."""
        submitted.wait()
        return {name: values.numpy() for name, values in submitted.host.items()}

    def release(self, submitted: Submitted) -> None:
        """Give the batch's buffers to a later batch, once its copies are done (a dropped batch
        too). Releasing twice is harmless."""
        slot, submitted.slot, submitted.host = submitted.slot, None, {}
        if slot is not None:
            submitted.wait()
            self.free.append(slot)
