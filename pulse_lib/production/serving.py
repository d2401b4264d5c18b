"""A decision service: FastAPI answering single and batch decisions from a versioned
agent, with hot swaps that drop no request.

:func:`create_app` builds the app around an :class:`AgentSlot`, which holds the
current :class:`~pulse_lib.production.versioning.VersionedAgent`. A request reads the
slot **once**, when it starts, and scores with that agent to the end; every response
names the agent version that answered. :meth:`AgentSlot.swap` replaces the reference
under a lock, so a swap never interrupts a request: requests already running finish on
the old agent (Python keeps it alive while they hold it), requests that start after the
swap returned see the new one.

Endpoints (JSON):

- ``GET /health``: status, agent version, feature version and width, batch and body
  limits.
- ``POST /decide``: ``{"user_id": ..., "features": [63 numbers], "feature_version":
  optional}`` -> ``{"user_id", "action", "action_name", "q_values", "agent_version"}``.
- ``POST /decide/batch``: ``{"requests": [{"user_id", "features"}, ...],
  "feature_version": optional}`` -> ``{"agent_version", "decisions": [...]}``.
- ``POST /admin/swap``: ``{"path": <agent directory>}``, only when the app was built
  with an ``agent_root`` and only for directories inside it; loads and verifies the
  agent (:meth:`VersionedAgent.load`), then swaps. In-process code calls
  :meth:`AgentSlot.swap` instead.

Bad requests are answered 4xx with a ``detail`` that names the problem: 422 for a
feature vector of the wrong width or with NaN/infinity (naming the index and feature)
and for malformed JSON, 404 for a user id absent from the user table (when one is
given), 413 for a batch over the limit, 409 for a ``feature_version`` other than the
agent's, 403 for a swap path outside ``agent_root``.

A request body larger than ``max_body_bytes`` is answered 413 before any of it is
decoded: at once when its ``Content-Length`` says so (the body is not read), and, for a
body without that header (chunked), as soon as the bytes read pass the limit. The
default limit, :func:`default_max_body_bytes`, leaves room for ``max_batch`` rows of
generously formatted JSON, so the row-count 413 still answers an oversized batch of
ordinary rows.

Run it: ``python -m pulse_lib.production.serving --agent DIR [--host 127.0.0.1]
[--port 8000]``; in tests and benchmarks, :func:`running_server` starts uvicorn in a
thread on a free port of 127.0.0.1 and stops it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from pulse_lib.errors import ConfigError, PulseError
from pulse_lib.production.versioning import VersionedAgent

__all__ = [
    "ACTION_NAMES",
    "BODY_BYTES_PER_ROW",
    "DEFAULT_MAX_BATCH",
    "AgentSlot",
    "BatchItem",
    "BatchRequest",
    "DecisionRequest",
    "RunningServer",
    "SwapRequest",
    "create_app",
    "default_max_body_bytes",
    "running_server",
]

#: Names of the two PulseRL actions, by index, as responses give them.
ACTION_NAMES: tuple[str, str] = ("wait", "send")
#: Largest batch ``POST /decide/batch`` accepts by default (413 above it).
DEFAULT_MAX_BATCH: int = 1_024
#: Request-body bytes allowed per batch row by :func:`default_max_body_bytes`: 63
#: features written as 17 significant digits take about 1.5 KB, so this is room to
#: spare (whitespace, long user ids), not a tight fit.
BODY_BYTES_PER_ROW: int = 4_096
_BODY_SLACK = 64 * 1_024  # the envelope around the rows (feature_version, braces)


def default_max_body_bytes(max_batch: int) -> int:
    """The largest request body :func:`create_app` accepts by default for batches of up
    to ``max_batch`` rows: ``max_batch * BODY_BYTES_PER_ROW + 64 KiB``."""
    return max_batch * BODY_BYTES_PER_ROW + _BODY_SLACK


class _BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, before the app (and
    so the JSON decoder) sees any of it.

    A ``Content-Length`` over the limit is refused without reading the body. Otherwise
    the body is read (into memory, at most ``max_bytes``) and refused as soon as it
    passes the limit, which also catches a chunked body that declares no length. A body
    within the limit is handed to the app unchanged. The 413 closes the connection: the
    unread rest of the body cannot be told from a next request.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(
                scope,
                receive,
                send,
                f"request body of {declared:,} bytes (Content-Length) is over the "
                f"limit of {self.max_bytes:,} bytes",
            )
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nobody to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(
                    scope,
                    receive,
                    send,
                    f"request body is over the limit of {self.max_bytes:,} bytes "
                    f"(stopped reading at {size:,})",
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any, detail: str) -> None:
        response = JSONResponse(
            status_code=413, content={"detail": detail}, headers={"connection": "close"}
        )
        await response(scope, receive, send)


def _content_length(scope: Any) -> int | None:
    """The request's ``Content-Length`` as a number, or None (absent or unreadable:
    the streamed count decides then)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class AgentSlot:
    """The service's current agent: read once per request, swapped atomically.

    Only agents of the same feature schema may replace each other (the service's
    request format is that schema); another schema is a SchemaError naming the
    difference.
    """

    def __init__(self, agent: VersionedAgent) -> None:
        if not isinstance(agent, VersionedAgent):
            raise ConfigError(
                f"the service needs a VersionedAgent, got {type(agent).__name__}"
            )
        self._agent = agent
        self._lock = threading.Lock()
        self.swaps = 0  #: number of completed swaps

    @property
    def agent(self) -> VersionedAgent:
        """The agent new requests use (one attribute read: atomic)."""
        return self._agent

    def swap(self, new: VersionedAgent) -> tuple[str, str]:
        """Make ``new`` the agent for requests that start from now on; return
        ``(previous version, new version)``. Running requests keep their agent."""
        if not isinstance(new, VersionedAgent):
            raise ConfigError(
                f"can only swap in a VersionedAgent, got {type(new).__name__}"
            )
        with self._lock:
            old = self._agent
            old.check_schema(new.schema)
            self._agent = new
            self.swaps += 1
        return old.version, new.version


class DecisionRequest(BaseModel):
    """Body of ``POST /decide``."""

    user_id: int | str  #: the user (checked against the user table, if any)
    features: list[float]  #: the user's features, in the agent's schema order
    #: the features' version; another than the agent's is answered 409
    feature_version: str | None = None


class BatchItem(BaseModel):
    """One user of a batch."""

    user_id: int | str  #: the user
    features: list[float]  #: the user's features, in the agent's schema order


class BatchRequest(BaseModel):
    """Body of ``POST /decide/batch``."""

    requests: list[BatchItem]  #: the users to decide for
    feature_version: str | None = None  #: as in :class:`DecisionRequest`


class SwapRequest(BaseModel):
    """Body of ``POST /admin/swap``."""

    path: str  #: agent directory, relative to the app's ``agent_root``


def _as_user_key(user_id: Any) -> str:
    return str(user_id)


def create_app(
    agent: VersionedAgent | AgentSlot,
    users: Iterable[Any] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    agent_root: str | os.PathLike[str] | None = None,
    max_body_bytes: int | None = None,
) -> Any:
    """The FastAPI app serving ``agent``.

    ``users``: the known user ids (compared as strings); a request for another id is
    answered 404. ``None`` accepts any id. ``max_batch``: the largest batch accepted
    (413 above). ``agent_root``: enables ``POST /admin/swap`` for agent directories
    inside it. ``max_body_bytes``: the largest request body, refused with 413 before it
    is decoded (default :func:`default_max_body_bytes` of ``max_batch``). The slot is
    ``app.state.slot`` (call ``app.state.slot.swap(agent)`` to swap in-process).
    """
    from pulse_lib.validation import check_integer

    slot = agent if isinstance(agent, AgentSlot) else AgentSlot(agent)
    max_batch = check_integer("max_batch", max_batch, low=1)
    max_body_bytes = check_integer(
        "max_body_bytes",
        default_max_body_bytes(max_batch) if max_body_bytes is None else max_body_bytes,
        low=1,
    )
    known = None if users is None else frozenset(_as_user_key(u) for u in users)
    root = None if agent_root is None else Path(agent_root).resolve()

    app = FastAPI(title="PulseRL decision service", version="1")
    app.state.slot = slot
    app.state.max_batch = max_batch
    app.state.max_body_bytes = max_body_bytes
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(part) for part in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(
            f"{'.'.join(e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]
        )
        return JSONResponse(
            status_code=422, content={"detail": detail, "errors": errors}
        )

    def check_version(current: VersionedAgent, version: str | None) -> None:
        if version is not None and version != current.schema.version:
            raise HTTPException(
                409,
                f"feature_version {version!r} differs from the agent's "
                f"{current.schema.version!r} (agent {current.version}): score these "
                "features with an agent trained on them",
            )

    def check_user(user_id: Any, where: str) -> None:
        if known is not None and _as_user_key(user_id) not in known:
            raise HTTPException(404, f"{where}unknown user_id {user_id!r}")

    def features_array(
        current: VersionedAgent, rows: list[list[float]], single: bool
    ) -> np.ndarray:
        """The ``(n, width)`` array of the rows, or 422 naming the first bad row and
        feature."""
        width = current.schema.width

        def where(i: int) -> str:
            return "features" if single else f"requests[{i}].features"

        for i, row in enumerate(rows):
            if len(row) != width:
                raise HTTPException(
                    422,
                    f"{where(i)} has {len(row)} values; the agent takes {width} "
                    f"(feature version {current.schema.version})",
                )
        obs = np.asarray(rows, np.float64)
        bad = ~np.isfinite(obs)
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise HTTPException(
                422,
                f"{where(i)}[{j}] ({current.schema.names[j]}) is {obs[i, j]}: "
                "features must be finite numbers",
            )
        return obs

    def answer(user_id: Any, action: int, q: np.ndarray) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "action": action,
            "action_name": ACTION_NAMES[action] if len(q) == 2 else str(action),
            "q_values": q.tolist(),
        }

    @app.get("/health", response_model=None)
    async def health() -> dict[str, Any]:
        current = slot.agent
        return {
            "status": "ok",
            "agent_version": current.version,
            "feature_version": current.schema.version,
            "n_features": current.schema.width,
            "max_batch": max_batch,
            "max_body_bytes": max_body_bytes,
            "swaps": slot.swaps,
        }

    @app.post("/decide", response_model=None)
    async def decide(body: DecisionRequest) -> JSONResponse:
        current = slot.agent  # read once: this request ends on this agent
        check_version(current, body.feature_version)
        check_user(body.user_id, "")
        obs = features_array(current, [body.features], single=True)
        actions, q = current.decide(obs, current.schema)
        out = answer(body.user_id, int(actions[0]), q[0])
        out["agent_version"] = current.version
        return JSONResponse(out)

    @app.post("/decide/batch", response_model=None)
    async def decide_batch(body: BatchRequest) -> JSONResponse:
        current = slot.agent
        n = len(body.requests)
        if n > max_batch:
            raise HTTPException(
                413, f"batch of {n} requests is over the limit of {max_batch}"
            )
        if n == 0:
            raise HTTPException(422, "requests is empty: send at least one")
        check_version(current, body.feature_version)
        for i, item in enumerate(body.requests):
            check_user(item.user_id, f"requests[{i}]: ")
        obs = features_array(
            current, [item.features for item in body.requests], single=False
        )
        actions, q = current.decide(obs, current.schema)
        return JSONResponse(
            {
                "agent_version": current.version,
                "decisions": [
                    answer(item.user_id, int(a), row)
                    for item, a, row in zip(body.requests, actions, q)
                ],
            }
        )

    @app.post("/admin/swap", response_model=None)
    def swap(
        body: SwapRequest,
    ) -> dict[str, Any]:  # sync: loading runs in the thread pool
        if root is None:
            raise HTTPException(
                403, "swapping over HTTP is off: the app was built without agent_root"
            )
        target = (root / body.path).resolve()
        if not target.is_relative_to(root):
            raise HTTPException(
                403, f"path {body.path!r} is outside the agent root {root}"
            )
        try:
            new = VersionedAgent.load(target)
            previous, current = slot.swap(new)
        except FileNotFoundError as exc:
            raise HTTPException(404, f"no agent at {body.path!r}: {exc}") from exc
        except PulseError as exc:
            raise HTTPException(409, f"agent {body.path!r} refused: {exc}") from exc
        return {"previous": previous, "current": current}

    return app


# --------------------------------------------------------------------------- running


@dataclass
class RunningServer:
    """What :func:`running_server` yields."""

    url: str  #: ``http://127.0.0.1:<port>``
    port: int  #: the port it listens on
    server: Any  #: the ``uvicorn.Server``
    thread: threading.Thread  #: the thread running its event loop


@contextlib.contextmanager
def running_server(
    app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> Iterator[RunningServer]:
    """Serve ``app`` with uvicorn in a thread; yield once it accepts connections.

    ``port=0`` binds a free port (the socket is bound here and handed to uvicorn, so
    no other process can take it in between). On exit the server stops accepting,
    finishes the requests in flight and the thread is joined.
    """
    import uvicorn

    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted
    # connections only when the protocol says TCP; without it every response waited
    # for the client's delayed ACK (about 40 ms per request, measured)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host=host,
        port=bound,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn"
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise PulseError(f"uvicorn stopped before serving on {host}:{bound}")
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            sock.close()
            raise PulseError(f"uvicorn did not start on {host}:{bound} in {timeout} s")
        time.sleep(0.01)
    try:
        yield RunningServer(f"http://{host}:{bound}", bound, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m pulse_lib.production.serving --agent DIR``: serve a saved agent."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--agent", required=True, help="a directory VersionedAgent.save wrote"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH)
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="largest request body (default: room for --max-batch rows)",
    )
    parser.add_argument(
        "--agent-root",
        default=None,
        help="allow POST /admin/swap for agents inside this folder",
    )
    args = parser.parse_args(argv)
    from pulse_lib.book import setup_torch

    setup_torch()
    app = create_app(
        VersionedAgent.load(args.agent),
        max_batch=args.max_batch,
        agent_root=args.agent_root,
        max_body_bytes=args.max_body_bytes,
    )
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    # run the imported module's main, not this __main__ copy: the request models must
    # be the ones pydantic resolves in pulse_lib.production.serving
    from pulse_lib.production.serving import main as _main

    _main()
