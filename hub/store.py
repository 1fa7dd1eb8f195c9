"""The store: SQLite through sqlite-utils, one writer thread behind a queue.

sqlite-utils is synchronous, so every database call runs on one dedicated thread and never on the
event loop. The thread drains whatever is queued into one transaction: events arrive at sensor
rate and cost one fsync per batch, while an incident or outbox entry awaits its own commit before
anything is sent (safety rule 1). WAL; a transaction that holds an incident or an unsent alert is
committed with synchronous=FULL: a kill -9 or a power cut loses nothing that was reported
committed, and `PRAGMA integrity_check` passes afterwards. Raw events and delivery bookkeeping
ride along without an fsync of their own (synchronous=NORMAL: consistent, and durable with the
next FULL commit).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.resources
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import msgspec
import sqlite_utils

from hub.events import Event, EventKind, Incident, IncidentKind, Severity, Value

log = logging.getLogger(__name__)

T = TypeVar("T")

# Most rows one transaction takes; bounds the latency an incident waits behind a burst.
MAX_BATCH: Final = 5000
# While the disk is full or read-only, events wait in memory up to this many, then the oldest go.
MAX_PENDING_EVENTS: Final = 200_000
# Raw events gather on the loop this long before they wake the writer (sooner with any call):
# at sensor rate one transaction per tick instead of one per event, and an alarm's commit never
# queues behind a commit of the event that raised it. A crash loses at most this much history;
# never an incident, which is committed by its own call.
EVENT_LINGER_S: Final = 0.1


_JSON = msgspec.json.Encoder()


def to_json(value: Any) -> str:
    """Compact JSON text for a column or a message body (msgspec: several times cheaper than
    json.dumps).

    What msgspec refuses (a string with a lone surrogate from a sensor's payload, a type it does
    not know) is written by the standard library instead, escaped: bad data is stored as it came,
    and never stops the writer."""
    try:
        return _JSON.encode(value).decode()
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
        return json.dumps(value, default=repr)


class StoreError(Exception):
    """The database cannot be used; the message says why and what to do."""


def _schema_scripts() -> list[tuple[int, str]]:
    folder = importlib.resources.files("hub") / "schema"
    return sorted(
        (int(entry.name[1:4]), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.startswith("v") and entry.name.endswith(".sql")
    )


SCHEMA: Final = _schema_scripts()
SCHEMA_VERSION: Final = SCHEMA[-1][0]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION, one numbered script per transaction."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema v{version}, newer than this hub (v{SCHEMA_VERSION}): "
            "update aal-hub instead of running an older release on it"
        )
    for number, script in SCHEMA:
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number:d}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        log.info("database migrated", extra={"schema": number})
        version = number
    return int(version)


def _statements(script: str) -> Iterable[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


def encode_value(value: Value) -> str | None:
    return None if value is None else to_json(value)


def decode_value(text: str | None) -> Value:
    if text is None:
        return None
    value = json.loads(text)
    return tuple(value) if isinstance(value, list) else value


def _event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.wall,
        event.mono,
        str(event.kind),
        event.device,
        event.room,
        encode_value(event.value),
        event.source,
    )


class _Call:
    __slots__ = ("durable", "fn", "future", "loop")

    def __init__(
        self, fn: Callable[[sqlite_utils.Database], Any], loop: asyncio.AbstractEventLoop, durable: bool
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.durable = durable
        self.future: asyncio.Future[Any] = loop.create_future()


_STOP: Final = object()


class Store:
    """Async facade over one SQLite file; `async with Store(path) as store:`."""

    def __init__(self, path: Path | str, *, quick_check: bool = True) -> None:
        self.path = Path(path)
        self._quick_check = quick_check
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite_utils.Database | None = None
        self._pending_events: collections.deque[Event] = collections.deque()
        self._lingering: list[Event] = []  # on the loop, not yet handed to the writer
        self._linger: asyncio.TimerHandle | None = None
        self._hour_of_room: dict[tuple[float, str], int] = {}
        self.events_written = 0
        self.batches = 0
        self.last_error: str | None = None
        self.events_dropped = 0
        self._synchronous = "FULL"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name="store-writer", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Drain everything queued, commit, and stop the writer."""
        if self._thread is None:
            return
        self._hand_over_events()
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # -- the API the hub uses ----------------------------------------------------------------

    def append_event(self, event: Event) -> None:
        """Queue one event for the next batch; never blocks the loop."""
        self._lingering.append(event)
        if self._linger is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._hand_over_events()  # called from outside a loop: no timer to wait for
                return
            self._linger = loop.call_later(EVENT_LINGER_S, self._hand_over_events)

    def _hand_over_events(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._lingering:
            events, self._lingering = self._lingering, []
            self._queue.put(events)

    async def call(self, fn: Callable[[sqlite_utils.Database], T], *, durable: bool = True) -> T:
        """Run `fn(db)` on the writer thread in a transaction; return once it is committed.

        `durable`: the commit survives a power cut before this returns (an fsync). Bookkeeping
        whose loss a restart repairs (a delivery already made is sent again under its idempotency
        key) may say False and skip the fsync; the next durable commit carries it to the disk.
        """
        if self._thread is None:
            raise StoreError("the store is not open")
        item = _Call(fn, asyncio.get_running_loop(), durable)
        self._hand_over_events()  # what happened before this call is committed with it
        self._queue.put(item)
        result: T = await item.future
        return result

    def submit(self, fn: Callable[[sqlite_utils.Database], object]) -> None:
        """Queue `fn(db)` for the next transaction without waiting; a failure is logged."""
        if self._thread is None:
            raise StoreError("the store is not open")
        item = _Call(fn, asyncio.get_running_loop(), durable=False)
        item.future.add_done_callback(_log_failure)
        self._hand_over_events()
        self._queue.put(item)

    async def flush(self) -> None:
        """Wait until everything queued before now is committed."""
        await self.call(lambda _db: None)

    async def record_incident(self, incident: Incident, *, actor: str = "rules") -> None:
        """Commit an incident and its first audit entry, durably, before anyone is told."""
        await self.call(lambda db: insert_incident(db, incident, actor=actor))

    # -- the writer thread -------------------------------------------------------------------

    def _open(self) -> sqlite_utils.Database:
        if not self.path.parent.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(
                    f"cannot create the folder {self.path.parent} for the database: {err.strerror}"
                ) from err
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the database {self.path}: {err}") from err
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if self._quick_check:
                _check_integrity(conn, self.path)
            migrate(conn)
        except sqlite3.DatabaseError as err:
            conn.close()
            raise StoreError(_explain(self.path, err)) from err
        except BaseException:
            conn.close()
            raise
        return sqlite_utils.Database(conn)

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            self._db = self._open()
        except BaseException as err:  # noqa: BLE001 (handed to the awaiting task, not swallowed)
            loop.call_soon_threadsafe(_settle, ready, None, err)
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        stopping = False
        while not stopping or self._pending_events:
            calls: list[_Call] = []
            if not stopping:
                stopping = self._take_batch(calls)
            try:
                self._commit(self._db, calls)
            except Exception as err:
                # Whatever it was, the writer lives on: every alarm after it needs it.
                log.exception("store batch failed unexpectedly")
                failure = StoreError(f"unexpected store failure: {type(err).__name__}: {err}")
                for call in calls:
                    call.loop.call_soon_threadsafe(_settle, call.future, None, failure)
            if stopping and self._pending_events and self.last_error:
                break  # the disk still refuses; what cannot be written is reported below
        if self._pending_events:
            log.error(
                "store closing with unwritten events",
                extra={"count": len(self._pending_events), "error": self.last_error},
            )
        self._db.conn.close()

    def _take_batch(self, calls: list[_Call]) -> bool:
        """Block for one item, then take whatever else is queued, up to MAX_BATCH."""
        try:
            item = self._queue.get(timeout=1.0 if self._pending_events else None)
        except queue.Empty:
            return False
        taken = 0
        while True:
            if item is _STOP:
                return True
            if isinstance(item, list):  # events handed over from the loop
                self._pending_events.extend(item)
                taken += len(item) - 1
            else:
                calls.append(item)
            taken += 1
            if taken >= MAX_BATCH:
                return False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False

    def _commit(self, db: sqlite_utils.Database, calls: list[_Call]) -> None:
        events = list(self._pending_events)
        # Raw events and bookkeeping need no fsync of their own; anything that must survive a
        # power cut (an incident, an unsent alert) makes its whole transaction synchronous.
        self._set_synchronous(db, "FULL" if any(c.durable for c in calls) else "NORMAL")
        try:
            results = _transaction(db, self.path, events, calls)
        except sqlite3.Error as err:
            if not (events and calls):
                self._fail(err, calls)
                return
            # Incidents and outbox entries go first: try them without the waiting events.
            try:
                results = _transaction(db, self.path, [], calls)
            except sqlite3.Error as err_alone:
                self._fail(err_alone, calls)
                return
            self._fail(err, [])
            events = []
        except Exception:
            # Not the disk but the events themselves (a bug, a value no encoder takes): they
            # are dropped, said loudly, and the calls (incidents first) go through without them.
            log.exception("events could not be stored and are dropped", extra={"count": len(events)})
            self.events_dropped += len(events)
            self._pending_events.clear()
            events = []
            try:
                results = _transaction(db, self.path, [], calls)
            except sqlite3.Error as err_alone:
                self._fail(err_alone, calls)
                return
        else:
            self._pending_events.clear()
        self.events_written += len(events)
        self.batches += 1
        if events and self.last_error is not None:
            log.warning("store writes again", extra={"after": self.last_error})
            self.last_error = None
        # One wake-up of each waiting loop per transaction, not one per call.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Call, Any, BaseException | None]]] = {}
        for result in results:
            by_loop.setdefault(result[0].loop, []).append(result)
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, settled)

    def _set_synchronous(self, db: sqlite_utils.Database, mode: str) -> None:
        if mode != self._synchronous:
            db.conn.execute(f"PRAGMA synchronous = {mode}")
            self._synchronous = mode

    def _fail(self, err: sqlite3.Error, calls: list[_Call]) -> None:
        """Keep events for a later retry (bounded), fail the calls: their callers decide."""
        message = _explain(self.path, err)
        if message != self.last_error:
            log.error("store write failed", extra={"error": message})
        self.last_error = message
        while len(self._pending_events) > MAX_PENDING_EVENTS:
            self._pending_events.popleft()
            self.events_dropped += 1
        for call in calls:
            call.loop.call_soon_threadsafe(_settle, call.future, None, StoreError(message))
        time.sleep(0.2)  # on the writer thread: a full disk must not spin the CPU


def _transaction(
    db: sqlite_utils.Database, path: Path, events: list[Event], calls: list[_Call]
) -> list[tuple[_Call, Any, BaseException | None]]:
    """One transaction: the events, then each call under its own savepoint."""
    conn = db.conn
    results: list[tuple[_Call, Any, BaseException | None]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        if events:
            conn.executemany(
                "INSERT INTO events (wall, mono, kind, device, room, value, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [_event_row(e) for e in events],
            )
            _count_activity(conn, events)
            _touch_devices(conn, events)
        for call in calls:
            # A savepoint per call: one failing call does not undo the others.
            conn.execute("SAVEPOINT call")
            try:
                value = call.fn(db)
            except Exception as err:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole transaction back (e.g. disk full)
                conn.execute("ROLLBACK TO call")
                if isinstance(err, sqlite3.Error):
                    err = StoreError(_explain(path, err))
                results.append((call, None, err))
            else:
                results.append((call, value, None))
            conn.execute("RELEASE call")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return results


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise StoreError(
            f"the database {path} is damaged ({'; '.join(problems)}); move it aside "
            "and start again, or recover it with: sqlite3 FILE .recover"
        )


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        log.error("store write failed", extra={"error": str(error)})


def _settle_all(results: list[tuple[_Call, Any, BaseException | None]]) -> None:
    for call, value, error in results:
        _settle(call.future, value, error)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _explain(path: Path, err: sqlite3.Error) -> str:
    code = getattr(err, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return f"the disk holding {path} is full: free space so the hub can record events"
    if code in {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}:
        return f"the database {path} cannot be written ({err}): check the folder's permissions"
    if code in {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT}:
        return (
            f"the database {path} is damaged ({err}); move it aside and start again, "
            "or recover it with: sqlite3 FILE .recover"
        )
    return f"database {path}: {err}"


HOUR: Final = 3600.0


def _count_activity(conn: sqlite3.Connection, events: Iterable[Event]) -> None:
    """Fold signs of life into hourly per-room counts, in the same transaction as the events."""
    counts: collections.Counter[tuple[float, str]] = collections.Counter()
    for event in events:
        if event.is_activity:
            counts[(event.wall // HOUR * HOUR, event.room or "")] += 1
    if counts:
        conn.executemany(
            "INSERT INTO activity_hourly (hour, room, count) VALUES (?, ?, ?)"
            " ON CONFLICT (hour, room) DO UPDATE SET count = count + excluded.count",
            [(hour, room, n) for (hour, room), n in counts.items()],
        )


def _touch_devices(conn: sqlite3.Connection, events: Iterable[Event]) -> None:
    """Last seen, battery and link state per device: one UPDATE per device and batch."""
    seen: dict[str, list[Any]] = {}
    for event in events:
        row = seen.setdefault(event.device, [0.0, None, None])
        row[0] = max(row[0], event.wall)
        if event.kind is EventKind.BATTERY and isinstance(event.value, int | float):
            row[1] = float(event.value)
        if event.kind is EventKind.AVAILABILITY:
            row[2] = 1 if event.value else 0
    conn.executemany(
        "UPDATE devices SET last_seen = max(coalesce(last_seen, 0), ?),"
        " battery = coalesce(?, battery), online = coalesce(?, online, 1), updated = ? WHERE id = ?",
        [(wall, battery, online, wall, device) for device, (wall, battery, online) in seen.items()],
    )


def incident_from_row(row: Sequence[Any]) -> Incident:
    """An incident back from a row that starts: id, kind, severity, room, reason, detector,
    evidence, wall, mono."""
    return Incident(
        id=row[0],
        kind=IncidentKind(row[1]),
        severity=Severity(row[2]),
        room=row[3],
        reason=row[4],
        detector=row[5],
        evidence=json.loads(row[6] or "{}"),
        wall=row[7],
        mono=row[8],
    )


def insert_incident(db: sqlite_utils.Database, incident: Incident, *, actor: str = "rules") -> None:
    """An incident and its "raised" audit line; call it inside the committing transaction."""
    db.execute(
        "INSERT INTO incidents (id, kind, severity, room, reason, detector, evidence,"
        " wall, mono, state, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)",
        [
            incident.id,
            str(incident.kind),
            int(incident.severity),
            incident.room,
            incident.reason,
            incident.detector,
            to_json(dict(incident.evidence)),
            incident.wall,
            incident.mono,
            incident.wall,
        ],
    )
    audit(db, incident.wall, incident.id, actor, "raised", {"reason": incident.reason})


def audit(
    db: sqlite_utils.Database,
    wall: float,
    incident_id: str | None,
    actor: str,
    action: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """One line of the audit log; call it inside the transaction that makes the change."""
    db.execute(
        "INSERT INTO audit (wall, incident_id, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
        [wall, incident_id, actor, action, to_json(dict(detail or {}))],
    )
