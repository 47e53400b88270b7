"""A third-party D-Bus client of org.aivault.Vault1, written with dbus-next.

Driven by tests/tests/dbus.rs as an unprivileged user, on the private
system-like bus named by DBUS_SYSTEM_BUS_ADDRESS. Each mode prints one JSON
object on its last line (or, for `hold`, a line per step).

  client.py calls             list, exists, masked, run, denied run, Status
  client.py pages             every page of ListSecretsPage, then ListSecrets
  client.py stream GO CMD...  RunStreaming CMD; after its first line of
                              output, create the file GO (the command waits
                              for it), then read to EOF and collect the end
  client.py own               try to own the daemon's bus name
  client.py hold CMD...       RunStreaming CMD, say "started", then wait to be killed
  client.py stall CMD...      RunStreaming CMD, read nothing until its stdout pipe
                              is full, then CancelRun and WaitRun
  client.py http REQUEST      ListCapabilities, then OpenCapabilityConnection:
                              write REQUEST (HTTP/1.1 text) on the descriptor
                              and read the answer until the broker closes it
"""

import asyncio
import fcntl
import json
import os
import socket
import sys
import termios
import time

from dbus_next import BusType, Message, MessageType, Variant
from dbus_next.aio import MessageBus

NAME = "org.aivault.Vault1"
PATH = "/org/aivault/Vault1"
IFACE = "org.aivault.Vault1"


def plain(value):
    """dbus-next values as JSON-friendly Python values."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


async def call(bus, member, signature="", body=(), interface=IFACE):
    reply = await bus.call(
        Message(
            destination=NAME,
            path=PATH,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
    )
    if reply.message_type == MessageType.ERROR:
        return {"error": reply.error_name, "message": plain(reply.body[0]) if reply.body else ""}
    return reply


async def connect():
    return await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()


async def calls():
    bus = await connect()
    out = {}
    r = await call(bus, "ListSecrets", "s", ["user"])
    out["list"] = r if isinstance(r, dict) else plain(r.body[0])
    r = await call(bus, "SecretExists", "ss", ["user", "TOKEN"])
    out["exists"] = r if isinstance(r, dict) else r.body[0]
    r = await call(bus, "MaskedValue", "ss", ["user", "TOKEN"])
    out["masked"] = r if isinstance(r, dict) else r.body[0]
    r = await call(
        bus, "Run", "asa{sv}", [["printenv", "TOKEN"], {"stdin_text": Variant("s", "")}]
    )
    out["run"] = r if isinstance(r, dict) else plain(r.body)
    r = await call(bus, "Run", "asa{sv}", [["printenv", "TOKEN"], {"stdni": Variant("s", "")}])
    out["unknown_option"] = r if isinstance(r, dict) else plain(r.body)
    r = await call(bus, "Run", "asa{sv}", [["printenv", "TOKEN"], {"timeout_ms": Variant("s", "1")}])
    out["wrong_type"] = r if isinstance(r, dict) else plain(r.body)
    r = await call(bus, "Run", "asa{sv}", [["/usr/bin/id"], {}])
    out["denied"] = r if isinstance(r, dict) else plain(r.body)
    r = await call(
        bus, "Get", "ss", [IFACE, "Status"], interface="org.freedesktop.DBus.Properties"
    )
    out["status"] = r if isinstance(r, dict) else plain(r.body[0])
    print(json.dumps(out))


async def pages():
    """ListSecretsPage from the first page to the last; then ListSecrets."""
    bus = await connect()
    names, calls, cursor, short_meta = [], 0, "", 0
    out = {}
    while True:
        r = await call(bus, "ListSecretsPage", "ssu", ["user", cursor, 0])
        calls += 1
        if isinstance(r, dict):
            out["error"] = r
            break
        for s in plain(r.body[0]):
            names.append(s["name"])
            if len(s.get("description") or "") < 1024 or len(s["tags"]) < 32:
                short_meta += 1
        cursor = r.body[1]
        if cursor == "":
            break
    out.update({"names": names, "calls": calls, "short_meta": short_meta})
    r = await call(bus, "ListSecrets", "s", ["user"])
    out["whole"] = r if isinstance(r, dict) else {"count": len(r.body[0])}
    print(json.dumps(out))


async def stream(go, argv):
    bus = await connect()
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def on_message(msg):
        if (
            msg.message_type == MessageType.SIGNAL
            and msg.interface == IFACE
            and msg.member == "RunExited"
            and not exited.done()
        ):
            exited.set_result(plain(msg.body))

    bus.add_message_handler(on_message)
    reply = await call(bus, "RunStreaming", "asa{sv}", [argv, {}])
    if isinstance(reply, dict):
        print(json.dumps({"error": reply}))
        return
    run_id = reply.body[0]
    out_fd = reply.unix_fds[reply.body[1]]
    err_fd = reply.unix_fds[reply.body[2]]

    def read_line(fd):
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(fd, 1)
            if not chunk:
                break
            data += chunk
        return data

    def read_all(fd):
        data = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk

    first = await loop.run_in_executor(None, read_line, out_fd)
    ended_before_first = exited.done()
    # Only now may the command finish: it waits for this file.
    open(go, "w").close()
    rest = await loop.run_in_executor(None, read_all, out_fd)
    err = await loop.run_in_executor(None, read_all, err_fd)
    signal = await asyncio.wait_for(exited, 30)
    wait = await call(bus, "WaitRun", "t", [run_id])
    print(
        json.dumps(
            {
                "run_id": run_id,
                "first": first.decode(),
                "ended_before_first": ended_before_first,
                "rest": rest.decode(),
                "stderr": err.decode(),
                "signal": signal,
                "wait": wait if isinstance(wait, dict) else plain(wait.body),
            }
        )
    )


async def own():
    bus = await connect()
    reply = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="RequestName",
            signature="su",
            body=[NAME, 4],  # DBUS_NAME_FLAG_DO_NOT_QUEUE
        )
    )
    if reply.message_type == MessageType.ERROR:
        print(json.dumps({"error": reply.error_name}))
    else:
        print(json.dumps({"owned": reply.body[0]}))


async def hold(argv):
    bus = await connect()
    reply = await call(bus, "RunStreaming", "asa{sv}", [argv, {}])
    if isinstance(reply, dict):
        print(json.dumps({"error": reply}), flush=True)
        return
    print(json.dumps({"started": reply.body[0]}), flush=True)
    await asyncio.sleep(3600)


async def stall(argv):
    bus = await connect()
    reply = await call(bus, "RunStreaming", "asa{sv}", [argv, {}])
    if isinstance(reply, dict):
        print(json.dumps({"error": reply}))
        return
    run_id = reply.body[0]
    out_fd = reply.unix_fds[reply.body[1]]
    # The pipe is full once its queue stops growing while at least half its
    # capacity is queued (page-sized slots make "full" less than capacity).
    capacity = fcntl.fcntl(out_fd, 1032)  # F_GETPIPE_SZ
    deadline = time.monotonic() + 30
    queued, steady_since = -1, time.monotonic()
    stalled = False
    while time.monotonic() < deadline and not stalled:
        now = int.from_bytes(fcntl.ioctl(out_fd, termios.FIONREAD, b"\0" * 4), "little")
        if now != queued:
            queued, steady_since = now, time.monotonic()
        stalled = queued >= capacity // 2 and time.monotonic() - steady_since > 0.5
        await asyncio.sleep(0.05)
    cancel = await call(bus, "CancelRun", "t", [run_id])
    try:
        wait = await asyncio.wait_for(call(bus, "WaitRun", "t", [run_id]), 30)
        wait = wait if isinstance(wait, dict) else plain(wait.body)
    except asyncio.TimeoutError:
        wait = {"error": "WaitRun did not return within 30 s"}
    print(
        json.dumps(
            {
                "pipe_stalled": stalled,
                "queued": queued,
                "cancel": cancel if isinstance(cancel, dict) else "ok",
                "wait": wait,
            }
        )
    )


async def http(request):
    bus = await connect()
    out = {"pid": os.getpid()}
    r = await call(bus, "ListCapabilities")
    out["list"] = r if isinstance(r, dict) else plain(r.body)
    r = await call(bus, "OpenCapabilityConnection")
    if isinstance(r, dict):
        out["open"] = r
        print(json.dumps(out))
        return
    out["signature"] = r.signature
    fd = r.unix_fds[r.body[0]]
    with socket.socket(fileno=fd) as conn:
        conn.settimeout(120)
        conn.sendall(request.encode())
        got = b""
        while True:
            chunk = await asyncio.get_running_loop().run_in_executor(None, conn.recv, 65536)
            if not chunk:
                break
            got += chunk
    out["response"] = got.decode("utf-8", "replace")
    print(json.dumps(out))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "calls":
        asyncio.run(calls())
    elif mode == "pages":
        asyncio.run(pages())
    elif mode == "stream":
        asyncio.run(stream(args[0], args[1:]))
    elif mode == "own":
        asyncio.run(own())
    elif mode == "hold":
        asyncio.run(hold(args))
    elif mode == "stall":
        asyncio.run(stall(args))
    elif mode == "http":
        asyncio.run(http(args[0]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
