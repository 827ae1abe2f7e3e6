#!/usr/bin/env python3
"""kv.py: the Python version of resh's demo key-value service (stdlib asyncio only).

It serves the same RESP subset as resh-kv (async Rust) and resh-kv-threads (threads and a
BTreeMap), written independently of them: PING, ECHO, SET, GET, DEL, EXISTS, INCR, DECR,
MGET, MSET, LPUSH, LPOP, LLEN, LRANGE and CONFIG GET; and what resh's checkpoint (a logical
copy between diverse versions) needs: KEYS (Redis glob patterns, keys sorted so that the
versions agree), TYPE, PTTL and PEXPIRETIME (nothing expires here), RPUSH, FLUSHALL and DBSIZE. Every reply
is the one Redis 7 gives, byte for byte.

Usage: python3 kv.py --port PORT
"""
import argparse
import asyncio
import collections
import sys

# glob() recurses once per '*' of a pattern, up to Redis's limit of 1000 (Python-to-Python
# calls use no C stack since 3.11).
sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))

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
    """Redis's string2ll: [-]digits, no leading zero (but "0"), no '+', no spaces, no "-0"."""
    if raw == b"0":
        return 0
    digits = raw[1:] if raw.startswith(b"-") else raw
    if not digits or not digits.isdigit() or digits.startswith(b"0"):
        return None
    n = int(digits) * (-1 if raw.startswith(b"-") else 1)
    return n if -(2**63) <= n < 2**63 else None


def c_string(raw, limit=None):
    """What C's printf("%.*s") shows of raw: up to the first NUL, at most limit bytes."""
    raw = raw.split(b"\0", 1)[0]
    return raw if limit is None else raw[:limit]


def error(text):
    """An error reply whose text may carry client bytes: Redis blanks out CR and LF."""
    return b"-" + text.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def glob(pattern, string, nocase=False):
    """Redis 7's stringmatchlen, quirks and all: '[^..]' negates ('!' does not), a range
    compares C's signed chars, a class missing its ']' ends with the pattern, an empty string
    matches no pattern, more than 1000 nested '*' match nothing."""

    def fold(b):
        return b + 32 if nocase and 65 <= b <= 90 else b

    def signed(b):
        return b - 256 if b >= 128 else b

    plen = len(pattern)
    give_up = [False]

    def at(i):
        return pattern[i] if i < plen else 0

    def match(p, s, nesting):
        if nesting > 1000:
            return False
        while p < plen and s < len(string):
            ch = pattern[p]
            if ch == 0x2A:  # '*'
                while at(p + 1) == 0x2A:
                    p += 1
                if p + 1 == plen:
                    return True
                while s < len(string):
                    if match(p + 1, s, nesting + 1):
                        return True
                    if give_up[0]:
                        return False
                    s += 1
                give_up[0] = True
                return False
            elif ch == 0x3F:  # '?'
                s += 1
            elif ch == 0x5B:  # '['
                p += 1
                negate = at(p) == 0x5E  # '^'
                if negate:
                    p += 1
                c = string[s]
                hit = False
                while True:
                    if at(p) == 0x5C and plen - p >= 2:  # '\\'
                        p += 1
                        hit = hit or pattern[p] == c
                    elif at(p) == 0x5D:  # ']'
                        break
                    elif p >= plen:
                        p -= 1
                        break
                    elif plen - p >= 3 and pattern[p + 1] == 0x2D:  # '-'
                        low, high = sorted((signed(pattern[p]), signed(pattern[p + 2])))
                        low, high = signed(fold(low & 0xFF)), signed(fold(high & 0xFF))
                        hit = hit or low <= signed(fold(c)) <= high
                        p += 2
                    else:
                        hit = hit or fold(pattern[p]) == fold(c)
                    p += 1
                if hit == negate:
                    return False
                s += 1
            else:
                if ch == 0x5C and plen - p >= 2:
                    p += 1
                    ch = pattern[p]
                if fold(ch) != fold(string[s]):
                    return False
                s += 1
            p += 1
            if s == len(string):
                while at(p) == 0x2A:
                    p += 1
                break
        return p == plen and s == len(string)

    return match(0, 0, 0)


CONFIG_HELP = [
    b"CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"GET <pattern>",
    b"    Return parameters matching the glob-like <pattern> and their values.",
    b"SET <directive> <value>",
    b"    Set the configuration <directive> to <value>.",
    b"RESETSTAT",
    b"    Reset statistics reported by the INFO command.",
    b"REWRITE",
    b"    Rewrite the configuration file.",
    b"HELP",
    b"    Prints this help.",
]


class Store:
    def __init__(self):
        self.data = {}

    def execute(self, args):
        name = args[0].lower().decode("latin-1")  # bytes.lower(): ASCII letters only
        handler = getattr(self, "cmd_" + name, None)
        if handler is None:
            shown = b""
            for arg in args[1:]:
                if len(shown) >= 128:
                    break
                shown += b"'" + c_string(arg, 128 - len(shown)) + b"' "
            return error(b"ERR unknown command '" + c_string(args[0], 128) + b"', with args beginning with: " + shown)
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

    @_arity(2, None)
    def cmd_rpush(self, key, *values):
        target = self.data.setdefault(key, collections.deque())
        if not isinstance(target, collections.deque):
            return WRONGTYPE
        target.extend(values)
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
        known = {b"save": b"", b"appendonly": b"no"}
        # (least arguments after the subcommand, most); None: no upper bound.
        arities = {b"get": (1, None), b"set": (2, None), b"resetstat": (0, 0), b"rewrite": (0, 0), b"help": (0, 0)}
        lowest_highest = arities.get(sub.lower())
        if lowest_highest is None:
            return error(b"ERR unknown subcommand '" + c_string(sub, 128) + b"'. Try CONFIG HELP.")
        low, high = lowest_highest
        if len(rest) < low or (high is not None and len(rest) > high):
            return b"-ERR wrong number of arguments for 'config|%s' command\r\n" % sub.lower()
        sub = sub.lower()
        if sub == b"set":
            return b"-ERR resh-kv: CONFIG SET is not supported\r\n"
        if sub == b"resetstat":
            return b"+OK\r\n"
        if sub == b"rewrite":
            return b"-ERR The server is running without a config file\r\n"
        if sub == b"help":
            return b"*%d\r\n" % len(CONFIG_HELP) + b"".join(b"+" + line + b"\r\n" for line in CONFIG_HELP)
        reply = {}  # lower-case name -> (name shown, value), in the order first asked
        for asked in rest:
            if any(c in b"[*?" for c in c_string(asked)):
                for name, value in known.items():
                    if glob(asked, name, nocase=True):
                        reply.setdefault(name, (name, value))
            elif asked.lower() in known:
                reply.setdefault(asked.lower(), (asked, known[asked.lower()]))
        return array([item for pair in reply.values() for item in pair])

    @_arity(1, 1)
    def cmd_keys(self, pattern):
        if pattern == b"*":
            return array(sorted(self.data))
        return array(sorted(key for key in self.data if glob(pattern, key)))

    @_arity(1, 1)
    def cmd_type(self, key):
        value = self.data.get(key)
        if value is None:
            return b"+none\r\n"
        return b"+list\r\n" if isinstance(value, collections.deque) else b"+string\r\n"

    @_arity(1, 1)
    def cmd_pttl(self, key):
        # Keys never expire here.
        return b":-1\r\n" if key in self.data else b":-2\r\n"

    @_arity(1, 1)
    def cmd_pexpiretime(self, key):
        # When a key expires: never, here.
        return b":-1\r\n" if key in self.data else b":-2\r\n"

    @_arity(0, None)
    def cmd_flushall(self, *options):
        # Redis compares the option as a C string, ignoring case.
        if len(options) > 1 or (options and c_string(options[0]).lower() not in (b"sync", b"async")):
            return b"-ERR syntax error\r\n"
        self.data.clear()
        return b"+OK\r\n"

    @_arity(0, 0)
    def cmd_dbsize(self):
        return b":%d\r\n" % len(self.data)


def split_inline(line):
    """An inline request split as Redis's sdssplitargs does; ProtocolError on bad quotes."""
    line = c_string(line)
    blanks = b" \t\n\v\f\r"
    escapes = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
    hexdigits = b"0123456789abcdefABCDEF"
    words = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in blanks:
            i += 1
        if i == n:
            return words
        word = bytearray()
        quote = None
        while True:
            c = line[i] if i < n else None
            if quote == b'"':
                if c == 0x5C and line[i + 1:i + 2] == b"x" and len(line[i + 2:i + 4]) == 2 and all(
                    h in hexdigits for h in line[i + 2:i + 4]
                ):
                    word.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    word += escapes.get(line[i], bytes([line[i]]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in blanks:
                        raise ProtocolError(b"unbalanced quotes in request")
                    i += 1
                    break
                elif c is None:
                    raise ProtocolError(b"unbalanced quotes in request")
                else:
                    word.append(c)
            elif quote == b"'":
                if c == 0x5C and line[i + 1:i + 2] == b"'":
                    i += 1
                    word.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in blanks:
                        raise ProtocolError(b"unbalanced quotes in request")
                    i += 1
                    break
                elif c is None:
                    raise ProtocolError(b"unbalanced quotes in request")
                else:
                    word.append(c)
            else:
                if c is None or c in b" \n\r\t":  # not \v or \f: only the blanks before a word
                    break
                if c == 0x22:
                    quote = b'"'
                elif c == 0x27:
                    quote = b"'"
                else:
                    word.append(c)
            i += 1
        words.append(bytes(word))


async def read_command(reader):
    """One request: a RESP array of bulk strings, or an inline command. None at EOF.
    Redis's limits: at most 2**31-1 elements, bulk strings of at most 512 MB; an array of
    zero or fewer elements is an empty request."""
    line = await reader.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        line = line[:-1] if line.endswith(b"\n") else line
        return split_inline(line[:-1] if line.endswith(b"\r") else line)
    count = to_int(line[1:].rstrip(b"\r\n"))
    if count is None or count > 2**31 - 1:
        raise ProtocolError(b"invalid multibulk length")
    args = []
    for _ in range(count):
        header = (await reader.readline()).rstrip(b"\r\n")
        if not header.startswith(b"$"):
            got = header[:1] if header else b" "
            raise ProtocolError(b"expected '$', got '" + got + b"'")
        length = to_int(header[1:])
        if length is None or not 0 <= length <= 512 * 1024 * 1024:
            raise ProtocolError(b"invalid bulk length")
        data = await reader.readexactly(length + 2)
        args.append(data[:length])
    return args


async def serve(store, reader, writer):
    try:
        while True:
            try:
                args = await read_command(reader)
            except ProtocolError as problem:
                writer.write(error(b"ERR Protocol error: " + problem.args[0]))
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
