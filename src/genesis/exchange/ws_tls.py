"""TLS over a connected socket that can be read and written without waiting.

``trio.SSLStream`` can only be read by awaiting it, and it keeps what it decrypted inside its
``SSLObject``: a :class:`~.ws_reader.ReadGroup` waiting on the socket would never wake for those
bytes. :class:`TlsSocketStream` is Python's :class:`ssl.SSLObject` between two
:class:`ssl.MemoryBIO`\\ s over a ``trio.SocketStream``'s socket, with two ways in:

- :meth:`TlsSocketStream.read_nowait` and :meth:`TlsSocketStream.write_nowait` never wait. A
  read reads the socket once and decrypts *every* complete record that arrived, so nothing
  decrypted stays behind in the ``SSLObject`` and the socket's readiness is the stream's
  (what remains in the incoming BIO is at most the start of a record whose end is still on its
  way). A write encrypts all of its data at once and writes what the socket takes.
- The ``trio.abc.Stream`` interface (:meth:`~TlsSocketStream.receive_some`,
  :meth:`~TlsSocketStream.send_all`, :meth:`~TlsSocketStream.aclose`) for a task that may
  wait (the handshakes, close frames, pings, and a connection not read by a group).

Every byte of ciphertext goes through one queue (``_unsent``) in the order it was encrypted and
is written from its front, whoever writes: records of two writers never interleave, and a
record a non-blocking write could not finish is finished first by the next writer.
:attr:`TlsSocketStream.flush_pending` says when such bytes are waiting, so the owner can have
``send_all(b"")`` flush them from a task that may wait. TLS 1.3 post-handshake messages
(session tickets, KeyUpdate, post-handshake authentication) are read by ``SSLObject`` inside a
read; whatever it wants to send in reply takes the same path as a write.

Errors: a failed handshake (certificate, hostname, protocol) raises
``trio.BrokenResourceError`` from the ``ssl.SSLError``; a failed read or write afterwards
``OSError`` from the ``*_nowait`` methods (``ssl.SSLError`` is one) and
``trio.BrokenResourceError`` from the stream methods; a use after :meth:`~TlsSocketStream.aclose`
``trio.ClosedResourceError``. Verification is on by default (``ssl.create_default_context()``).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from typing import Final

import trio

__all__ = ["TLS_READ_SIZE", "TlsSocketStream"]

TLS_READ_SIZE: Final = 65536
"""Ciphertext asked of the socket per read when the caller names no size."""
_DECRYPT_CHUNK: Final = 65536


class TlsSocketStream(trio.abc.Stream):
    """A TLS client connection over a connected ``trio.SocketStream``; owns the socket.

    Call :meth:`do_handshake` first. One task at a time may wait in :meth:`receive_some` and
    one in :meth:`send_all` (``trio.BusyResourceError`` otherwise); the ``*_nowait`` methods may
    be called from any task between them. The caller closes it (:meth:`aclose`).

    Args:
        transport: the connected TCP stream (its socket is read and written directly).
        server_hostname: the name the certificate must carry (also sent as SNI).
        ssl_context: ``ssl.create_default_context()`` when ``None`` (verification on).
    """

    def __init__(
        self,
        transport: trio.SocketStream,
        *,
        server_hostname: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.transport = transport
        self._fd = transport.socket.fileno()
        context = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._unsent = bytearray()
        """Ciphertext encrypted and not yet on the socket, in order."""
        self._queued = 0
        """Ciphertext bytes ever queued (so a sender knows when its own are out)."""
        self._written = 0
        self._eof = False
        """close_notify (or the socket's end) was read: every later read returns b""."""
        self._read_failure: OSError | None = None
        """A record failed behind data already returned: the next read raises it."""
        self._broken: BaseException | None = None
        self._closed = False
        self._receiving = False
        self._sending = False
        self._flush_lock = trio.StrictFIFOLock()

    # -- state ----------------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's file descriptor (wait on it for :meth:`read_nowait`)."""
        return self._fd

    @property
    def flush_pending(self) -> bool:
        """Ciphertext is waiting for the socket: someone must ``await send_all(b"")``."""
        return bool(self._unsent) and self._broken is None and not self._closed

    @property
    def end_buffered(self) -> bool:
        """The end (close_notify, the socket's EOF, a failed record) was read behind data
        already returned: the next read returns ``b""`` or raises at once, without the
        socket becoming readable again."""
        return self._eof or self._read_failure is not None

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The TLS state (``version()``, ``cipher()``, ``getpeercert()``, …)."""
        return self._ssl

    # -- without waiting ------------------------------------------------------------------

    def read_nowait(self, max_bytes: int = TLS_READ_SIZE) -> bytes:
        """One read of the socket (at most ``max_bytes`` of ciphertext), fully decrypted.

        Every complete record that arrived is decrypted and returned (so the plaintext may
        exceed ``max_bytes`` by what was left of a record from the previous read); nothing
        decrypted stays buffered. An end behind the data is kept for the next read
        (:attr:`end_buffered`). Replies the TLS layer owes (post-handshake messages) are
        written at once, or wait for :attr:`flush_pending`'s flush.

        Returns:
            the plaintext; ``b""`` at the end (close_notify, or the socket's EOF without one).

        Raises:
            BlockingIOError: no complete record is available yet.
            OSError: the socket or the TLS layer failed (``ssl.SSLError``).
            trio.ClosedResourceError: after :meth:`aclose`.
        """
        failure = self._read_failure
        if failure is not None:
            self._read_failure = None  # raised once; the stream stays broken
            raise failure
        self._check_usable()
        if self._eof:
            return b""
        socket_eof = False
        try:
            data = os.read(self._fd, max_bytes)
        except BlockingIOError:
            pass  # a record left complete in the BIO (behind the handshake) is still read
        else:
            if data:
                self._incoming.write(data)
            else:
                socket_eof = True
                self._incoming.write_eof()
        chunks: list[bytes] = []
        try:
            while True:
                chunk = self._ssl.read(_DECRYPT_CHUNK)
                if not chunk:  # close_notify: returned now or at the next read
                    self._eof = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._eof = True  # close_notify, as some OpenSSL builds report it
        except ssl.SSLEOFError:
            self._eof = True  # the socket ended without close_notify (a ragged EOF)
        except OSError as exc:  # ssl.SSLError: a record that does not decrypt, an alert
            self._broken = exc
            if not chunks:
                raise
            self._read_failure = exc  # the data before it first
        finally:
            self._queue_outgoing()
        if self._unsent and self._broken is None:
            self._write_some()
        if chunks:
            return b"".join(chunks)
        if self._eof or socket_eof:
            self._eof = True
            return b""
        raise BlockingIOError("no complete TLS record yet")

    def write_nowait(self, data: bytes) -> int:
        """Encrypt all of ``data`` and write what the socket takes at once.

        Returns:
            ``len(data)``: every byte was taken; ciphertext the socket did not take waits for
            :attr:`flush_pending`'s flush, ahead of anything encrypted later.

        Raises:
            OSError: the socket or the TLS layer failed.
            trio.ClosedResourceError: after :meth:`aclose`.
        """
        self._check_usable()
        if data:  # SSLObject.write(b"") would mean EOF
            self._encrypt(data)
        self._write_some()
        return len(data)

    # -- trio.abc.Stream --------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """The TLS handshake (certificate and hostname checked as the context says).

        Raises:
            trio.BrokenResourceError: the handshake failed (its ``__cause__`` is the
                ``ssl.SSLError`` or ``OSError``), or the peer hung up.

        Cancellation: the stream is unusable afterwards; close it.
        """
        self._check_usable()
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush_all()
                await self._receive_ciphertext()
                continue
            except OSError as exc:  # ssl.SSLError (certificate, hostname, protocol)
                self._queue_outgoing()
                self._send_alert()
                self._broken = exc
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
            break
        await self._flush_all()  # the client's Finished (TLS 1.3)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next plaintext (``b""`` at the end); waits for the socket when none is there.

        Raises:
            trio.BrokenResourceError: the socket or the TLS layer failed.
            trio.ClosedResourceError: after :meth:`aclose`.
            trio.BusyResourceError: another task is receiving.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLS stream")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            size = TLS_READ_SIZE if max_bytes is None else max_bytes
            while True:
                try:
                    data = self.read_nowait(size)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self._fd)
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(f"TLS read failed: {exc}") from exc
                if self._unsent:
                    await self._flush_all()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and write it after every byte encrypted before it.

        ``send_all(b"")`` writes what :attr:`flush_pending` reports.

        Raises:
            trio.BrokenResourceError: the socket failed (or an earlier send was cancelled).
            trio.ClosedResourceError: after :meth:`aclose`.
            trio.BusyResourceError: another task is sending.

        Cancellation: a cancelled send leaves the stream broken (part of a record may be on
        the wire), as with ``trio.SSLStream``.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_usable()
            if data:
                self._encrypt(bytes(data))
            await self._flush_all()
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check_usable()
        await self._flush_all()
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Send close_notify if the socket takes it at once, then close the socket.

        Does not wait for the peer's close_notify (WebSocket ends with its own close frames).
        Idempotent; the socket is closed even when cancelled.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        if self._broken is None:
            # SSLWantReadError: the peer's close_notify has not come, and we do not wait for it.
            with contextlib.suppress(OSError):
                self._ssl.unwrap()
            self._queue_outgoing()
            with contextlib.suppress(OSError):  # closing anyway
                self._write_some()
        self._closed = True
        self._unsent.clear()
        await self.transport.aclose()

    # -- internals ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(f"TLS stream broken: {self._broken}")

    def _encrypt(self, data: bytes) -> None:
        try:
            self._ssl.write(data)
        except OSError as exc:  # ssl.SSLError: the connection is no longer usable
            self._broken = exc
            raise
        self._queue_outgoing()

    def _queue_outgoing(self) -> None:
        if self._outgoing.pending:
            data = self._outgoing.read()
            self._unsent += data
            self._queued += len(data)

    def _write_some(self) -> None:
        """Write the front of the queue as far as the socket takes it now."""
        if not self._unsent:
            return
        try:
            written = os.write(self._fd, self._unsent)
        except BlockingIOError:
            return
        except OSError as exc:
            self._broken = exc
            self._unsent.clear()
            raise
        del self._unsent[:written]
        self._written += written

    async def _flush_all(self) -> None:
        """Write the queue up to what is queued now (others may add behind it meanwhile).

        One task at a time waits for the socket (the lock); a later one finds its bytes
        written by the earlier one, or writes them next.
        """
        self._queue_outgoing()
        target = self._queued
        if self._written >= target:
            return
        async with self._flush_lock:
            try:
                while self._written < target:
                    if self._broken is not None:
                        raise trio.BrokenResourceError(f"TLS stream broken: {self._broken}")
                    try:
                        self._write_some()
                    except OSError as exc:
                        raise trio.BrokenResourceError(f"TLS write failed: {exc}") from exc
                    if self._written < target:
                        await trio.lowlevel.wait_writable(self._fd)
            except BaseException:
                if self._written < target and self._broken is None:  # part of a record out
                    self._broken = trio.BrokenResourceError("a TLS send was cancelled")
                    self._unsent.clear()
                raise

    async def _receive_ciphertext(self) -> None:
        """Wait for ciphertext and put it in the incoming BIO (the handshake's reads)."""
        while True:
            try:
                data = os.read(self._fd, TLS_READ_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                continue
            except OSError as exc:
                self._broken = exc
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
            if not data:
                self._broken = trio.BrokenResourceError("the peer hung up during TLS")
                raise trio.BrokenResourceError("the peer hung up during the TLS handshake")
            self._incoming.write(data)
            return

    def _send_alert(self) -> None:
        """The alert OpenSSL wrote after a failed handshake, if the socket takes it at once."""
        with contextlib.suppress(OSError):
            self._write_some()
