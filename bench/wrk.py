"""GETs and creates from wrk, a load generator written in C, where it is installed
(`apt-get install wrk`; CI installs it). A Python client on the same two cores spends
about as much CPU per request as the API it measures, so its figure says as much about
the client as about Norn; wrk spends a small fraction of that. Returns None without wrk:
the caller prints its Python client's figure alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

_GETS = """
local paths = {paths}
for name, value in pairs({headers}) do wrk.headers[name] = value end
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""

# Each wrk thread numbers its own requests; the run's random tag keeps names unique
# across runs and threads (a name taken twice would be answered 409 and counted as not ok).
_CREATES = """
local body, path, tag = {body}, {path}, {tag}
for name, value in pairs({headers}) do wrk.headers[name] = value end
wrk.headers["Content-Type"] = "application/json"
local ids = 0
setup = function(thread)
  ids = ids + 1
  thread:set("id", ids)
end
local n = 0
request = function()
  n = n + 1
  local name = string.format("%s-%d-%d", tag, id, n)
  return wrk.format("POST", path, nil, (body:gsub("__NAME__", name)))
end
"""

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("NORN %d %d %d %d %d\\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


# [5] from wrk, appended to _CREATES: its creates paced at a rate, each response's time
# (CLOCK_MONOTONIC, the clock of Python's time.monotonic()) and position written out.
# Each thread hands out send slots 1/rate apart in turn to whichever of its connections
# is free (wrk asks delay() before every request but a connection's first); a slot missed
# (all connections busy) is sent as soon as one is free, so the rate holds unless the
# server falls behind.
_PACED = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct {{ long tv_sec; long tv_nsec; }} norn_ts;
           int clock_gettime(int, norn_ts *); ]]
local ts = ffi.new("norn_ts")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
local out, interval = {out}, {interval}
local threads, number_thread = {{}}, setup
setup = function(thread)
  number_thread(thread)
  table.insert(threads, thread)
end
local slot = nil
answered, failed = {{}}, 0
delay = function()
  local t = now()
  slot = (slot or t) + interval
  if slot < t then return 0 end
  return math.floor((slot - t) * 1000)
end
response = function(status, headers, text)
  local at = now()
  local position = status == 201 and text:match('"position":%s*(%d+)')
  if position then
    answered[#answered + 1] = string.format("%.6f %s", at, position)
  else
    failed = failed + 1
  end
end
done = function(summary, latency, requests)
  local file = io.open(out, "w")
  local lost = 0
  for _, thread in ipairs(threads) do
    for _, line in ipairs(thread:get("answered")) do file:write(line, "\\n") end
    lost = lost + thread:get("failed")
  end
  file:close()
  local e = summary.errors
  io.write(string.format("NORN %d %d %d %d\\n", summary.requests, lost,
    e.connect + e.read + e.write + e.timeout, summary.duration))
end
"""


@dataclass(frozen=True)
class PacedCreates:
    answered: list[tuple[float, int]]  # (response time.monotonic(), position)
    sent: int  # and answered (wrk counts a request when its response has come)
    seconds: float  # wrk's own measure of its run
    not_ok: int  # answered other than 201 with a position
    socket_errors: int


@dataclass(frozen=True)
class WrkResult:
    requests: int
    not_ok: int  # answered with a status of 400 or more
    socket_errors: int
    p50_ms: float
    p99_ms: float


def _lua(value: object) -> str:
    """A Lua table or string literal of a list or dict of strings (JSON strings are valid
    Lua strings for the characters used here: ids, paths, header values)."""
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "{" + ", ".join(json.dumps(v) for v in value) + "}"
    raise TypeError(value)


def wrk_gets(
    base: str, headers: dict[str, str], paths: list[str], connections: int, seconds: float
) -> WrkResult | None:
    """GET a random one of `paths` over `connections` connections (two wrk threads, one
    per core) for `seconds`."""
    if not paths:
        return None
    script = _GETS.format(paths=_lua(paths), headers=_lua(headers))
    return _wrk(base, script, connections, seconds)


def wrk_creates(
    base: str,
    headers: dict[str, str],
    path: str,
    body: dict[str, Any],
    connections: int,
    seconds: float,
) -> WrkResult | None:
    """POST `body` to `path` over `connections` connections for `seconds`, its "name"
    made unique per request."""
    return _wrk(base, _creates_script(headers, path, body), connections, seconds)


def wrk_paced_creates(
    base: str,
    headers: dict[str, str],
    path: str,
    body: dict[str, Any],
    rate: float,
    connections: int,
    seconds: float,
) -> PacedCreates | None:
    """POST `body` to `path` at `rate`/s (at most `connections` at once, two wrk threads)
    for `seconds`; each 201's response time and position."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/answered.txt"
        pacing = _PACED.format(
            out=json.dumps(out),
            interval=repr(2 / rate),  # two threads, each half the rate
        )
        script = _creates_script(headers, path, body) + pacing
        line = _run(exe, base, script, connections, seconds)
        with open(out) as answered:
            pairs = [(float(at), int(p)) for at, p in (x.split() for x in answered)]
    sent, not_ok, socket_errors, duration_us = (int(x) for x in line.split()[1:])
    return PacedCreates(pairs, sent, duration_us / 1e6, not_ok, socket_errors)


def _creates_script(headers: dict[str, str], path: str, body: dict[str, Any]) -> str:
    """_CREATES for `body` (its "name" made unique per request) posted to `path`."""
    return _CREATES.format(
        body=json.dumps(json.dumps({**body, "name": "__NAME__"})),
        path=json.dumps(path),
        tag=json.dumps(f"wrk-{uuid.uuid4().hex[:8]}"),
        headers=_lua(headers),
    )


def _wrk(base: str, script_text: str, connections: int, seconds: float) -> WrkResult | None:
    exe = shutil.which("wrk")
    if exe is None:
        return None
    line = _run(exe, base, script_text + _DONE, connections, seconds)
    requests, not_ok, socket_errors, p50_us, p99_us = (int(x) for x in line.split()[1:])
    return WrkResult(requests, not_ok, socket_errors, p50_us / 1000, p99_us / 1000)


def _run(exe: str, base: str, script_text: str, connections: int, seconds: float) -> str:
    """wrk's line starting "NORN " (its script's done())."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(script_text)
        script.flush()
        done = subprocess.run(  # noqa: S603 (wrk from PATH, arguments of ours)
            [
                exe,
                "-t2",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                script.name,
                base,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
    return next(x for x in done.stdout.splitlines() if x.startswith("NORN "))
