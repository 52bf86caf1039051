# An asyncio-style event loop on home fds across a migration: a selectors (epoll) set
# registered at home with stdin, then mos_sync(1) (the test migrates the process there),
# then an asyncio loop that reads stdin lines through add_reader until "end".
import asyncio
import os
import selectors
import sys

sync = os.environ.get("MOS_SYNC", ".")
sel = selectors.DefaultSelector()
print("selector", type(sel).__name__, flush=True)
sel.register(0, selectors.EVENT_READ, "stdin")
open(os.path.join(sync, "ready.1"), "w").close()
while not os.path.exists(os.path.join(sync, "go.1")):
    # the selector built at home, waited on (short timeouts) while the migration happens
    sel.select(timeout=0.005)
print("idle", sel.select(timeout=0.05), flush=True)
print("waiting first", flush=True)
for key, mask in sel.select(timeout=30):
    print("ready", key.data, mask, os.read(key.fd, 100).decode().strip(), flush=True)
sel.unregister(0)
sel.close()


async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_line():
        line = os.read(0, 100).decode()
        for w in line.split():
            print("async got", w, flush=True)
            if w == "end":
                done.set_result(None)

    loop.add_reader(0, on_line)
    print("waiting async", flush=True)
    await asyncio.wait_for(done, 30)


asyncio.run(main())
print("bye", flush=True)
