"""A desktop notifier of org.aivault.Approvals1 (and a spy), with dbus-next.

Driven by tests/tests/approval.rs as an unprivileged user in a login
session, on the private system-like bus named by DBUS_SYSTEM_BUS_ADDRESS.
Prints one JSON object per line, flushed; ends when the bus goes away.

  notifier.py register   subscribe to ApprovalCode signals, call
                         RegisterNotifier, then print every ApprovalCode
                         signal that reaches this connection
  notifier.py spy        without registering, ask for every ApprovalCode
                         signal (a plain match rule and an eavesdropping
                         one), try to become a monitor, and print every
                         ApprovalCode message that reaches it anyway
"""

import asyncio
import json
import os
import sys

from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus

NAME = "org.aivault.Vault1"
PATH = "/org/aivault/Vault1"
IFACE = "org.aivault.Approvals1"
RULE = "type='signal',interface='org.aivault.Approvals1',member='ApprovalCode'"


def say(**what):
    print(json.dumps(what), flush=True)


async def call(bus, destination, path, interface, member, signature="", body=()):
    return await bus.call(
        Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
    )


async def main(mode):
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()

    def heard(msg):
        if msg.message_type == MessageType.SIGNAL and msg.member == "ApprovalCode":
            body = msg.body
            say(
                signal="ApprovalCode",
                destination=msg.destination,
                id=body[0],
                code=body[1],
                rule=body[2],
                requester_uid=body[3],
                argv=body[4],
            )

    bus.add_message_handler(heard)
    dbus = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
    if mode == "register":
        # As a desktop library would: subscribe, so that a broadcast signal
        # would reach it too (the test's check that the signal is unicast).
        await call(bus, *dbus, "AddMatch", "s", [RULE])
        reply = await call(bus, NAME, PATH, IFACE, "RegisterNotifier")
        if reply.message_type == MessageType.ERROR:
            say(error=reply.error_name, message=reply.body[0] if reply.body else "", pid=os.getpid())
        else:
            say(registered=bus.unique_name, lifetime_s=reply.body[0], pid=os.getpid())
    elif mode == "spy":
        plain = await call(bus, *dbus, "AddMatch", "s", [RULE])
        eaves = await call(bus, *dbus, "AddMatch", "s", [RULE + ",eavesdrop='true'"])
        monitor = await call(
            bus,
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.Monitoring",
            "BecomeMonitor",
            "asu",
            [[RULE], 0],
        )
        say(
            listening=bus.unique_name,
            pid=os.getpid(),
            add_match=plain.message_type != MessageType.ERROR,
            eavesdrop_match=eaves.message_type != MessageType.ERROR,
            monitor=monitor.error_name if monitor.message_type == MessageType.ERROR else "granted",
        )
    else:
        sys.exit(f"unknown mode {mode}")
    await bus.wait_for_disconnect()


asyncio.run(main(sys.argv[1]))
