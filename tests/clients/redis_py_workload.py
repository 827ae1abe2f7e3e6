"""A Redis application's usage, through redis-py (from PyPI), run against resh and against one
redis-server directly: the answers must be the same.

    python redis_py_workload.py RESH_PORT DIRECT_PORT [--diverse]

Prints what differs and exits 1 if anything does. With --diverse, only the commands the demo's
diverse versions implement are used (strings, lists, KEYS).
"""
import sys
import threading
import time

import redis


def normal(value):
    """Sets and dicts as sorted lists, so that results compare as data."""
    if isinstance(value, dict):
        return sorted((normal(k), normal(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return sorted(normal(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    return value


def once_each(items):
    """A full scan returns every element exactly once: duplicates are an error here."""
    items = list(items)
    assert len(items) == len(set(items)), f"a scan returned duplicates: {len(items)} items, {len(set(items))} distinct"
    return sorted(items)


def common(r, out):
    out["ping"] = r.ping()
    r.client_setname("fidelity-test")
    out["getname"] = r.client_getname()
    out["select"] = r.execute_command("SELECT", 0)
    for i in range(200):
        r.set(f"key:{i}", i)
    out["keys"] = sorted(r.keys("key:*"))
    out["mget"] = r.mget([f"key:{i}" for i in range(0, 200, 7)])
    # redis-py's incr() sends INCRBY, which the diverse versions lack.
    out["incr"] = [r.execute_command("INCR", "counter") for _ in range(5)]
    r.rpush("list", *[f"item{i}" for i in range(50)])
    out["lrange"] = r.lrange("list", 0, -1)
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.execute_command("INCR", "piped")
    pipe.get("piped")
    pipe.lpop("list")
    pipe.keys("list*")
    out["pipeline"] = pipe.execute()
    t = r.time()
    out["time_is_now"] = abs(t[0] - time.time()) < 5 and 0 <= t[1] < 1_000_000
    out["dbsize"] = r.dbsize()


def redis_only(r, out):
    members = [f"m{i}" for i in range(300)]
    r.sadd("s", *members)
    r.sadd("t", *members[::2])
    out["smembers"] = normal(r.smembers("s"))
    out["sinter"] = normal(r.sinter("s", "t"))
    out["sunion"] = normal(r.sunion("s", "t"))
    out["sdiff"] = normal(r.sdiff("s", "t"))
    r.hset("h", mapping={f"f{i}": f"v{i}" for i in range(300)})
    out["hgetall"] = normal(r.hgetall("h"))
    out["hkeys"] = sorted(r.hkeys("h"))
    out["hvals"] = sorted(r.hvals("h"))
    r.zadd("z", {f"z{i}": i for i in range(300)})
    out["zrange"] = r.zrange("z", 0, 10, withscores=True)
    out["scan"] = once_each(r.scan_iter(match="key:*", count=10))
    out["scan_all"] = len(once_each(r.scan_iter()))
    out["sscan"] = once_each(r.sscan_iter("s", count=10))
    out["hscan"] = once_each(r.hscan_iter("h", match="f1*"))
    out["zscan"] = once_each(r.zscan_iter("z"))
    pipe = r.pipeline(transaction=False)
    pipe.smembers("t")
    pipe.hgetall("h")
    pipe.srem("s", "m1", "m2")
    pipe.scard("s")
    out["pipeline_sets"] = normal(pipe.execute())
    # Random picks: one replica proposes, the quorum checks; SPOP removes the same members on
    # every replica. The picks differ from the direct server's: compare what must hold.
    r.sadd("pop", *[f"p{i}" for i in range(20)])
    popped = [r.spop("pop") for _ in range(5)] + r.spop("pop", 3)
    out["spop"] = len(set(popped)) == 8 and r.scard("pop") == 12 and not any(r.smismember("pop", popped))
    out["spop_empty"] = (r.spop("nosuch"), r.spop("nosuch", 2))
    out["srandmember"] = r.srandmember("s") in set(members)
    picks = r.srandmember("s", 5)
    out["srandmember_count"] = len(set(picks)) == 5 and set(picks) <= set(members)
    out["srandmember_negative"] = len(r.srandmember("s", -7)) == 7
    fields = r.hrandfield("h", 3, withvalues=True)
    out["hrandfield"] = len(fields) == 6 and all(v == "v" + f[1:] for f, v in zip(fields[::2], fields[1::2]))
    scored = r.zrandmember("z", 2, withscores=True)
    out["zrandmember"] = len(scored) == 2 and all(float(s) == float(m[1:]) for m, s in scored)
    out["randomkey"] = r.exists(r.randomkey())
    # A pipelined request after a pick runs after it, as on one server.
    pipe = r.pipeline(transaction=False)
    pipe.sadd("solo", "m")
    pipe.spop("solo")
    pipe.sadd("solo", "m")
    pipe.sismember("solo", "m")
    out["spop_then_sadd"] = pipe.execute()
    # Blocking pops, woken by another client's push while they wait (other sessions go on
    # meanwhile: the connection resh shares is never blocked), and timing out.
    other = redis.Redis(connection_pool=r.connection_pool)

    def later(action):
        thread = threading.Thread(target=lambda: (time.sleep(0.2), action()))
        thread.start()
        return thread

    pushing = later(lambda: other.rpush("jobs", "j1"))
    out["blpop"] = r.blpop(["nothing", "jobs"], timeout=5)
    pushing.join()
    out["blpop_timeout"] = r.blpop("empty", timeout=0.2)
    r.rpush("src", "a", "b", "c")
    out["brpoplpush"] = r.brpoplpush("src", "dst", timeout=1)
    out["blmove"] = r.blmove("src", "dst", 1, "LEFT", "RIGHT")
    out["blmpop"] = r.blmpop(1, 2, "none", "dst", direction="LEFT", count=2)
    out["lists_after"] = (r.lrange("src", 0, -1), r.lrange("dst", 0, -1))
    r.zadd("bz", {"low": 1, "high": 9})
    out["bzpopmin"] = r.bzpopmin("bz", 1)
    out["bzpopmax"] = r.bzpopmax(["none", "bz"], 1)
    out["bzpopmin_timeout"] = r.bzpopmin("bz", 0.1)
    out["bzmpop"] = r.bzmpop(1, 1, ["none"], min=True)
    r.set("astring", "x")
    try:
        r.blpop("astring", timeout=1)
        out["blpop_wrongtype"] = "no error"
    except redis.exceptions.ResponseError as e:
        out["blpop_wrongtype"] = str(e)
    adding = later(lambda: other.xadd("events", {"k": "v"}))
    got = r.xread({"events": "$"}, block=5000)
    adding.join()
    out["xread_block"] = [(stream, [fields for _, fields in entries]) for stream, entries in got]
    out["xread_block_timeout"] = r.xread({"events": "$"}, block=100)
    # Publish/subscribe: a subscriber on a channel and a pattern, a publisher elsewhere.
    sub = r.pubsub()
    sub.subscribe("chan")
    sub.psubscribe("ch*")
    confirmations = [sub.get_message(timeout=2) for _ in range(2)]
    out["subscribed"] = [(m["type"], m["channel"], m["data"]) for m in confirmations if m]
    # Who listens to what, asked by another connection.
    out["pubsub_channels"] = other.pubsub_channels()
    out["pubsub_channels_matching"] = other.pubsub_channels("c*")
    out["pubsub_numsub"] = other.pubsub_numsub("chan", "nobody")
    out["pubsub_numpat"] = other.pubsub_numpat()
    out["publish_count"] = other.publish("chan", "hello")
    received = []
    deadline = time.time() + 5
    while len(received) < 2 and time.time() < deadline:
        m = sub.get_message(timeout=1)
        if m:
            received.append((m["type"], m["pattern"], m["channel"], m["data"]))
    out["messages"] = sorted(received, key=str)
    out["ping_subscribed"] = sub.ping()
    sub.unsubscribe("chan")
    sub.punsubscribe()
    out["unsubscribed"] = sorted(
        str((m["type"], m["channel"], m["data"])) for m in (sub.get_message(timeout=2) for _ in range(2)) if m
    )
    sub.close()
    out["publish_nobody"] = r.publish("nobody", "x")
    # Transactions: redis-py sends MULTI, the commands and EXEC in one write.
    pipe = r.pipeline(transaction=True)
    pipe.incr("tx:a")
    pipe.incrby("tx:b", 2)
    pipe.smembers("t")
    pipe.hgetall("h")
    pipe.get("tx:a")
    out["transaction"] = normal(pipe.execute())
    # Times to live inside a transaction: each replica would tell them from its own clock.
    pipe = r.pipeline(transaction=True)
    pipe.set("tx:e", "v", ex=100)
    pipe.ttl("tx:e")
    pipe.pttl("tx:e")
    pipe.ttl("tx:none")
    got = pipe.execute()
    out["transaction_ttl"] = [got[0], 0 < got[1] <= 100, 0 < got[2] <= 100000, got[3]]
    # An error at run time inside EXEC: the other commands run, as in Redis.
    pipe = r.pipeline(transaction=True)
    pipe.set("tx:s", "not a number")
    pipe.incr("tx:s")
    pipe.incr("tx:a")
    out["transaction_runtime_error"] = [str(x) for x in pipe.execute(raise_on_error=False)]
    # An error at queueing time (an unknown command): EXEC aborts, nothing runs. (resh answers
    # +QUEUED itself, so redis-py raises the EXECABORT rather than the unknown command's error;
    # both are ResponseErrors.)
    pipe = r.pipeline(transaction=True)
    pipe.incr("tx:a")
    pipe.execute_command("NOSUCHCOMMAND")
    try:
        pipe.execute()
        out["transaction_aborted"] = "ran"
    except redis.exceptions.ResponseError:
        out["transaction_aborted"] = "raised"
    out["tx_after"] = r.mget("tx:a", "tx:b")
    # redis-py's transaction() helper without WATCH.
    out["transaction_helper"] = r.transaction(lambda p: (p.multi(), p.incr("tx:c"), p.incr("tx:c")))
    # WATCH: optimistic locking, as redis-py's pipelines do it. Another client's write between
    # the WATCH and the EXEC aborts the transaction; without one, it runs.
    r.set("balance", 100)
    with r.pipeline() as pipe:
        pipe.watch("balance")
        value = int(pipe.get("balance"))
        other.set("balance", 50)
        pipe.multi()
        pipe.set("balance", value - 10)
        try:
            pipe.execute()
            out["watch_dirty"] = "ran"
        except redis.exceptions.WatchError:
            out["watch_dirty"] = "aborted"
    out["balance_after_dirty"] = r.get("balance")
    with r.pipeline() as pipe:
        pipe.watch("balance", "other-key")
        value = int(pipe.get("balance"))
        other.set("unrelated", 1)
        pipe.multi()
        pipe.set("balance", value - 10)
        out["watch_clean"] = pipe.execute()
    out["balance_after_clean"] = r.get("balance")

    def add_two(p):
        value = int(p.get("balance"))
        p.multi()
        p.set("balance", value + 2)

    out["transaction_watch"] = r.transaction(add_two, "balance")
    out["balance_after_helper"] = r.get("balance")
    with r.pipeline() as pipe:
        pipe.watch("balance")
        pipe.unwatch()
        other.set("balance", 7)
        pipe.multi()
        pipe.incr("balance")
        out["unwatched"] = pipe.execute()
    info = r.info()
    out["info"] = "redis_version" in info and "used_memory" in info
    out["config_get"] = r.config_get("maxmemory-policy")
    out["command_count"] = r.command_count()
    out["commands_listed"] = len(r.command()) == r.command_count()
    # Relative expirations are pinned by resh: same answers, and the same moment everywhere.
    out["expire"] = r.expire("key:1", 100)
    r.set("e1", "v", ex=100)
    r.setex("e2", 100, "v")
    r.set("e3", "v", px=100000, nx=True)
    out["ttls"] = [0 < r.ttl(k) <= 100 for k in ("key:1", "e1", "e2", "e3")]
    # Each replica would tell the time left from its own clock; resh tells it from the voted
    # expiry: never an error, and never more than the last answer.
    pttls = [r.pttl("e3") for _ in range(300)]
    out["pttls"] = all(0 < p <= 100000 for p in pttls) and pttls == sorted(pttls, reverse=True)
    out["pexpiretime_matches"] = abs(r.pexpiretime("e3") - (time.time() * 1000 + r.pttl("e3"))) < 1000
    out["no_ttl"] = [r.ttl("list"), r.pttl("nothing")]
    # XADD *: ids differ from the direct server's (another clock) but are ids, and increase.
    ids = [r.xadd("stream", {"n": i}) for i in range(20)]
    order = [tuple(map(int, i.split("-"))) for i in ids]
    out["xadd"] = len(set(ids)) == 20 and order == sorted(order)
    out["xlen"] = r.xlen("stream")
    out["xrange_fields"] = [fields for _, fields in r.xrange("stream")]
    # A consumer group read that blocks: nothing within its timeout, then an entry another
    # connection adds while it waits.
    r.xgroup_create("tasks", "workers", id="$", mkstream=True)
    out["xreadgroup_timeout"] = r.xreadgroup("workers", "w1", {"tasks": ">"}, count=1, block=100)
    adding = later(lambda: other.xadd("tasks", {"task": "1"}, id="5-1"))
    out["xreadgroup_blocked"] = r.xreadgroup("workers", "w1", {"tasks": ">"}, count=1, block=5000)
    adding.join()
    out["xreadgroup_pending"] = r.xpending("tasks", "workers")["pending"]
    out["xreadgroup_again"] = r.xreadgroup("workers", "w1", {"tasks": ">"}, count=1, block=50)


def other_databases(port, out):
    """Sessions in databases other than 0, beside one in 0, each with its own keys: pipelines,
    a watched transaction, scans, expirations, blocking pops, random picks, MOVE and SWAPDB."""
    def connect(db):
        return redis.Redis(host="127.0.0.1", port=port, db=db, decode_responses=True, socket_timeout=30)

    r0, r3, r5 = connect(0), connect(3), connect(5)
    for i in range(50):
        r0.set(f"db:{i}", f"zero{i}")
        r3.set(f"db:{i}", f"three{i}")
    out["db_get"] = [r0.get("db:7"), r3.get("db:7"), r5.get("db:7")]
    out["db_size"] = [r3.dbsize(), r5.dbsize()]
    pipe = r3.pipeline(transaction=False)
    for _ in range(20):
        pipe.execute_command("INCR", "db:counter")
    pipe.get("db:counter")
    out["db_pipeline"] = pipe.execute()
    with r3.pipeline() as pipe:
        pipe.watch("db:1")
        pipe.multi()
        pipe.set("db:1", "tx")
        pipe.get("db:1")
        out["db_transaction"] = pipe.execute()
    # A watch in database 3, dirtied by another connection's write there.
    with r3.pipeline() as pipe:
        pipe.watch("db:w")
        r3.set("db:w", "changed")
        pipe.multi()
        pipe.set("db:w", "by the watcher")
        try:
            pipe.execute()
            out["db_watch"] = "ran"
        except redis.WatchError:
            out["db_watch"] = "aborted"
    out["db_watched_value"] = r3.get("db:w")
    out["db_scan"] = once_each(r3.scan_iter(match="db:*"))
    r3.set("db:t", "v", ex=100)
    out["db_ttl"] = 0 < r3.ttl("db:t") <= 100
    r5.rpush("q", "a")
    out["db_blpop"] = r5.blpop("q", timeout=1)
    out["db_blpop_empty"] = r5.blpop("q", timeout=0.2)
    r3.sadd("db:s", "only")
    out["db_spop"] = r3.spop("db:s")
    out["db_srandmember"] = r3.srandmember("db:s")
    out["db_move"] = r3.move("db:2", 5)
    out["db_moved"] = [r3.get("db:2"), r5.get("db:2")]
    out["db_swapdb"] = r0.swapdb(3, 5)
    out["db_swapped"] = [r3.get("db:2"), r5.get("db:7"), r0.get("db:7")]
    out["db_publish"] = r3.publish("db:channel", "m")
    try:
        r3.execute_command("SELECT", 99)
        out["db_select_bad"] = "no error"
    except redis.ResponseError as e:
        out["db_select_bad"] = str(e)
    out["db_after_bad_select"] = r3.get("db:7")
    for r in (r0, r3, r5):
        r.close()


def main():
    resh_port, direct_port = int(sys.argv[1]), int(sys.argv[2])
    diverse = "--diverse" in sys.argv[3:]
    results = []
    for port in (resh_port, direct_port):
        r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=30)
        r.flushall()
        out = {}
        common(r, out)
        if not diverse:
            redis_only(r, out)
            other_databases(port, out)
        r.close()
        results.append(out)
    through, direct = results
    bad = [k for k in direct if through.get(k) != direct[k]]
    for k in bad:
        print(f"{k}: through resh {through.get(k)!r}, directly {direct[k]!r}")
    print(f"{len(direct)} checks, {len(bad)} differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
