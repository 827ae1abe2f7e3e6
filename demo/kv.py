#!/usr/bin/env python3
"""kv.py: the Python version of resh's demo key-value service (stdlib asyncio only).

It serves the same RESP subset as resh-kv (async Rust) and resh-kv-threads (threads and a
BTreeMap), written independently of them: PING, ECHO, SET, GET, DEL, EXISTS, INCR, DECR,
MGET, MSET, LPUSH, LPOP, LLEN, LRANGE and CONFIG GET.

Usage: python3 kv.py --port PORT
"""
import argparse
import asyncio
import collections

WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
NOT_INT = b"-ERR value is not an integer or out of range\r\n"


class ProtocolError(Exception):
    pass


def bulk(value):
    if value is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(value), value)


def array(values):
    return b"*%d\r\n" % len(values) + b"".join(bulk(v) for v in values)


def to_int(raw):
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text or text.strip() != text or text.startswith("+"):
        return None
    try:
        n = int(text)
    except ValueError:
        return None
    return n if -(2**63) <= n < 2**63 else None


class Store:
    def __init__(self):
        self.data = {}

    def execute(self, args):
        name = args[0].decode("latin-1").lower()
        handler = getattr(self, "cmd_" + name, None)
        if handler is None:
            return b"-ERR unknown command '%s'\r\n" % name.encode()
        low, high = handler.arity
        argc = len(args) - 1
        if argc < low or (high is not None and argc > high):
            return b"-ERR wrong number of arguments for '%s' command\r\n" % name.encode()
        return handler(*args[1:])

    def _arity(low, high):
        def mark(fn):
            fn.arity = (low, high)
            return fn
        return mark

    @_arity(0, 1)
    def cmd_ping(self, message=None):
        return b"+PONG\r\n" if message is None else bulk(message)

    @_arity(1, 1)
    def cmd_echo(self, message):
        return bulk(message)

    @_arity(2, 2)
    def cmd_set(self, key, value):
        self.data[key] = value
        return b"+OK\r\n"

    @_arity(1, 1)
    def cmd_get(self, key):
        value = self.data.get(key)
        if isinstance(value, collections.deque):
            return WRONGTYPE
        return bulk(value)

    @_arity(1, None)
    def cmd_del(self, *keys):
        removed = 0
        for key in keys:
            if self.data.pop(key, None) is not None:
                removed += 1
        return b":%d\r\n" % removed

    @_arity(1, None)
    def cmd_exists(self, *keys):
        return b":%d\r\n" % sum(1 for key in keys if key in self.data)

    def _add(self, key, delta):
        value = self.data.get(key, b"0")
        if isinstance(value, collections.deque):
            return WRONGTYPE
        n = to_int(value)
        if n is None:
            return NOT_INT
        n += delta
        if not -(2**63) <= n < 2**63:
            return b"-ERR increment or decrement would overflow\r\n"
        self.data[key] = str(n).encode()
        return b":%d\r\n" % n

    @_arity(1, 1)
    def cmd_incr(self, key):
        return self._add(key, 1)

    @_arity(1, 1)
    def cmd_decr(self, key):
        return self._add(key, -1)

    @_arity(1, None)
    def cmd_mget(self, *keys):
        values = [self.data.get(k) for k in keys]
        return array([v if isinstance(v, bytes) else None for v in values])

    @_arity(2, None)
    def cmd_mset(self, *pairs):
        if len(pairs) % 2:
            return b"-ERR wrong number of arguments for 'mset' command\r\n"
        for i in range(0, len(pairs), 2):
            self.data[pairs[i]] = pairs[i + 1]
        return b"+OK\r\n"

    @_arity(2, None)
    def cmd_lpush(self, key, *values):
        target = self.data.setdefault(key, collections.deque())
        if not isinstance(target, collections.deque):
            return WRONGTYPE
        target.extendleft(values)
        return b":%d\r\n" % len(target)

    @_arity(1, 2)
    def cmd_lpop(self, key, count=None):
        if count is not None:
            count = to_int(count)
            if count is None or count < 0:
                return b"-ERR value is out of range, must be positive\r\n"
        target = self.data.get(key)
        if target is None:
            return b"$-1\r\n" if count is None else b"*-1\r\n"
        if not isinstance(target, collections.deque):
            return WRONGTYPE
        popped = [target.popleft() for _ in range(min(1 if count is None else count, len(target)))]
        if not target:
            del self.data[key]
        if count is None:
            return bulk(popped[0] if popped else None)
        return array(popped)

    @_arity(1, 1)
    def cmd_llen(self, key):
        target = self.data.get(key)
        if isinstance(target, bytes):
            return WRONGTYPE
        return b":%d\r\n" % (len(target) if target else 0)

    @_arity(3, 3)
    def cmd_lrange(self, key, start, stop):
        start, stop = to_int(start), to_int(stop)
        if start is None or stop is None:
            return NOT_INT
        target = self.data.get(key)
        if target is None:
            return b"*0\r\n"
        if isinstance(target, bytes):
            return WRONGTYPE
        items = list(target)
        n = len(items)
        if start < 0:
            start = max(0, n + start)
        stop = n + stop if stop < 0 else min(stop, n - 1)
        return array(items[start:stop + 1] if start <= stop else [])

    @_arity(1, None)
    def cmd_config(self, sub, *rest):
        if sub.lower() != b"get" or len(rest) != 1:
            return b"-ERR unknown subcommand or wrong number of arguments for 'config' command\r\n"
        known = {b"save": b"", b"appendonly": b"no"}
        param = rest[0].lower()
        return array([param, known[param]]) if param in known else b"*0\r\n"


async def read_command(reader):
    """One request: a RESP array of bulk strings, or an inline command. None at EOF."""
    line = await reader.readline()
    if not line:
        return None
    line = line.rstrip(b"\r\n")
    if not line.startswith(b"*"):
        return line.split()
    try:
        count = int(line[1:])
    except ValueError:
        raise ProtocolError("invalid multibulk length")
    args = []
    for _ in range(count):
        header = (await reader.readline()).rstrip(b"\r\n")
        if not header.startswith(b"$"):
            raise ProtocolError("expected '$'")
        try:
            length = int(header[1:])
        except ValueError:
            raise ProtocolError("invalid bulk length")
        data = await reader.readexactly(length + 2)
        args.append(data[:length])
    return args


async def serve(store, reader, writer):
    try:
        while True:
            try:
                args = await read_command(reader)
            except ProtocolError as error:
                writer.write(b"-ERR Protocol error: %s\r\n" % str(error).encode())
                break
            if args is None:
                break
            if args:
                writer.write(store.execute(args))
            # Flush once the pipelined requests already received are answered.
            if not reader._buffer:
                await writer.drain()
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser(description="resh demo key-value service (Python asyncio)")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    store = Store()
    server = await asyncio.start_server(
        lambda r, w: serve(store, r, w), "127.0.0.1", options.port, limit=64 * 1024 * 1024
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
