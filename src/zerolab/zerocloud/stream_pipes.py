"""A worker's streams: connect's data going through a node while it runs.

A stream input or output (protocol.py: ``"stream": true``) is a pipe the
guest reads or writes as a sequential channel.  Two threads of the worker
move the bytes between the pipes and the client's socket, in frames, while
the guest runs:

- StreamInputs reads the request's frames and writes each into its stream's
  pipe.  What a guest has not read yet waits in memory (``limit`` bytes in
  all) so that a guest reading its streams in another order than they come
  holds none of them up; past that the thread stops reading the socket
  until the guest catches up.  At the deadline every pipe is closed (the
  guest reads the end of each) and the thread stops.
- StreamOutputs reads the pipes the guest writes and sends their bytes as
  frames as soon as they come; a guest that writes faster than the client
  reads waits in its write (the pipe is full), which slows the node down to
  its reader's pace instead of holding its output anywhere.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from . import protocol

PIECE = 64 << 10


class Deadline(Exception):
    pass


class StreamInputs:
    """Frames from the client into the pipes of the request's stream inputs."""

    def __init__(self, client: socket.socket, pending: bytes, count: int, limit: int, deadline: float):
        self.client = client
        self.pending = pending          # bytes already read past the payloads
        self.limit = limit
        self.deadline = deadline
        self.pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(count)]
        self.error: str | None = None
        self.timed_out = False   # streams were still open at the deadline
        self.received = 0
        for _, write_end in self.pipes:
            os.set_blocking(write_end, False)
        self.thread = threading.Thread(target=self.pump, name="zerolab-stream-in", daemon=True)

    @property
    def uris(self) -> list[str]:
        """Where the guest's channels read each stream."""
        return [f"/proc/self/fd/{read_end}" for read_end, _ in self.pipes]

    def start(self) -> None:
        if self.pipes:
            self.thread.start()

    def finish(self) -> None:
        """After the run: the guest reads no more (what still comes is read
        and dropped); returns once every stream has ended, or at the deadline."""
        for read_end, _ in self.pipes:
            os.close(read_end)
        if self.thread.is_alive():
            self.thread.join(max(0.0, self.deadline - time.monotonic()) + 1.0)

    def pump(self) -> None:
        count = len(self.pipes)
        buf = bytearray(self.pending)
        waiting: list[deque[bytes | None]] = [deque() for _ in range(count)]   # None: the stream's end
        writers: dict[int, int] = {i: w for i, (_, w) in enumerate(self.pipes)}   # pipes still open
        open_streams = set(range(count))
        held = 0
        connected = True
        try:
            while True:
                held += self.take_frames(buf, waiting, open_streams)
                held -= self.deliver(waiting, writers)
                if not open_streams and not any(waiting):
                    return
                # The client may be gone once every stream has ended: what
                # came is still the guest's to read.
                if not connected and open_streams:
                    raise protocol.ProtocolError("the request ended before its streams did")
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise Deadline()
                readers = [self.client] if connected and held < self.limit else []
                wanted = [writers[i] for i in writers if waiting[i]]
                readable, _, _ = select.select(readers, wanted, [], left)
                if readable:
                    data = self.client.recv(PIECE)
                    connected = bool(data)
                    buf += data
        except protocol.ProtocolError as e:
            self.error = str(e)
        except Deadline:
            # The guest's own timeout ends it; its streams end here, and what
            # it made of them cannot count.
            self.timed_out = True
        except OSError as e:
            self.error = f"reading the streams failed: {e}"
        finally:
            for write_end in writers.values():
                os.close(write_end)

    def take_frames(self, buf: bytearray, waiting: list[deque[bytes | None]], open_streams: set[int]) -> int:
        """Whole frames out of ``buf`` -> the bytes they added to the waiting ones."""
        added = 0
        while len(buf) >= protocol.STREAM_FRAME.size:
            number, length = protocol.parse_frame_header(bytes(buf[:protocol.STREAM_FRAME.size]))
            if number not in open_streams:
                raise protocol.ProtocolError(f"a frame of stream {number}, which is not an open stream input")
            end = protocol.STREAM_FRAME.size + length
            if len(buf) < end:
                break
            if length == 0:
                open_streams.discard(number)
                waiting[number].append(None)
            else:
                waiting[number].append(bytes(buf[protocol.STREAM_FRAME.size:end]))
                added += length
                self.received += length
            del buf[:end]
        return added

    @staticmethod
    def deliver(waiting: list[deque[bytes | None]], writers: dict[int, int]) -> int:
        """As much waiting data as the pipes take now -> how many bytes went
        (into a pipe, or dropped because its guest closed it)."""
        moved = 0
        for number, queue in enumerate(waiting):
            while queue:
                item = queue[0]
                if item is None:   # the stream ended: the guest reads its end
                    queue.popleft()
                    write_end = writers.pop(number, None)
                    if write_end is not None:
                        os.close(write_end)
                    continue
                write_end = writers.get(number)
                if write_end is None:   # the guest is gone: dropped
                    moved += len(item)
                    queue.popleft()
                    continue
                try:
                    n = os.write(write_end, item)
                except BlockingIOError:
                    break
                except BrokenPipeError:   # the run is over; the rest is read and dropped
                    os.close(writers.pop(number))
                    continue
                moved += n
                if n < len(item):
                    queue[0] = item[n:]
                    break
                queue.popleft()
        return moved


class StreamOutputs:
    """The pipes of the request's stream outputs, sent as frames as they fill."""

    def __init__(self, count: int, send: Callable[[bytes], None]):
        self.send = send
        self.pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(count)]
        self.failed: str | None = None
        self.thread = threading.Thread(target=self.pump, name="zerolab-stream-out", daemon=True)

    @property
    def uris(self) -> list[str]:
        """Where the guest's channels write each stream."""
        return [f"/proc/self/fd/{write_end}" for _, write_end in self.pipes]

    def start(self) -> None:
        if self.pipes:
            self.thread.start()

    def finish(self) -> None:
        """After the run: every stream ends once what is left in it is sent."""
        for _, write_end in self.pipes:
            os.close(write_end)
        if self.thread.is_alive():
            self.thread.join()

    def pump(self) -> None:
        readers = {read_end: number for number, (read_end, _) in enumerate(self.pipes)}
        try:
            while readers:
                readable, _, _ = select.select(list(readers), [], [])
                for read_end in readable:
                    data = os.read(read_end, PIECE)
                    if not data:
                        number = readers.pop(read_end)
                        os.close(read_end)
                    else:
                        number = readers[read_end]
                    if self.failed is None:
                        try:
                            self.send(protocol.frame(number, data))
                        except OSError as e:
                            # The client went away: the guest's writes are
                            # drained here all the same, so it runs to its end.
                            self.failed = f"sending the streams failed: {e}"
        finally:
            for read_end in readers:
                os.close(read_end)
