//! One RESP client's state ([`RespClient`]): what its session keeps of a connection's state
//! (its name, its database, its transaction, its WATCH, its subscriptions) and the commands it
//! answers itself or turns into steps, since every session shares one connection per replica.
use super::*;

/// One complete request as a client sent it, and its arguments.
#[derive(Clone, Copy)]
struct Incoming<'a> {
    request: &'a [u8],
    /// Re-encode it from its arguments before it goes to the replicas.
    rewrite: bool,
    args: &'a [&'a [u8]],
}

impl Incoming<'_> {
    /// Whether the command is `name`, in any case.
    fn named(&self, name: &str) -> bool {
        is(self.args.first(), name)
    }
}

/// One client's state: its name (`CLIENT SETNAME`) and its id. The commands that would change
/// or read the shared connection's own state are answered here:
/// - `CLIENT SETNAME`/`GETNAME`/`ID`/`SETINFO`, `RESET`: from the session's own state;
/// - `SELECT n`: the session's database. The shared connection stays in database 0 between
///   units: a session in another one has each submission ordered between `SELECT n` and
///   `SELECT 0` ([`ClientState::context`]). A new database is first tried on the replicas, in a
///   unit of its own (`MULTI`, `SELECT n`, `SELECT 0`, `EXEC`), so that one they refuse is refused;
/// - `HELLO` and `HELLO 2`: passed as `HELLO 2` (protocol 2 is what the shared connection
///   speaks), unvoted since it reports the replica's own connection id; a `SETNAME` in it is
///   the session's; RESP3 (`HELLO 3`) is refused as Redis refuses a version it lacks;
/// - `TIME`: resh's clock (each replica's would differ by the microsecond).
#[derive(Debug)]
pub struct RespClient {
    codec: Resp,
    id: u64,
    name: Option<Bytes>,
    /// The transaction the client is queueing (after MULTI, before EXEC or DISCARD).
    transaction: Option<Transaction>,
    /// It ordered a WATCH that has not ended (see `ordered::watch`).
    watching: bool,
    /// The channels and the patterns it subscribes to (resh's own pub/sub: see
    /// `ordered::pubsub`); while there are any, it is in Redis's subscribed mode.
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    /// Its database (`SELECT`); shared with the step that tries a new one on the replicas.
    db: Arc<AtomicU64>,
}

/// A transaction being queued: resh answers `+QUEUED` and keeps the commands, and at EXEC the
/// whole of it goes through the order as one unit (`MULTI`, the commands, `EXEC`), so no other
/// session's request can land inside it on the shared connection.
#[derive(Debug, Default)]
struct Transaction {
    /// The commands, as the replicas get them.
    queued: Vec<Bytes>,
    /// Their size, bounded by `max_frame_bytes`.
    bytes: usize,
    /// A command was refused while queueing: EXEC answers `EXECABORT`, as Redis does.
    aborted: bool,
    /// `TTL` and `PTTL` queued as `PEXPIRETIME`: their place in the transaction, and whether
    /// it was `TTL` (see [`ttl`]).
    time_left: Vec<(usize, bool)>,
}

/// Redis's rule for a client name: no spaces, newlines or other special characters.
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

impl RespClient {
    fn arity(command: &str) -> Dispatch {
        Dispatch::Reply(Resp::error(&format!("ERR wrong number of arguments for '{command}' command")))
    }

    fn set_name(&mut self, name: &[u8]) -> Result<(), Bytes> {
        if !valid_client_name(name) {
            return Err(Resp::error("ERR Client names cannot contain spaces, newlines or special characters."));
        }
        self.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
        Ok(())
    }

    fn client_command(&mut self, args: &[&[u8]]) -> Dispatch {
        let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_uppercase()).unwrap_or_default();
        let ok = || Dispatch::Reply(Bytes::from_static(b"+OK\r\n"));
        match (sub.as_str(), args.len()) {
            (_, 1) => Self::arity("client"),
            ("ID", 2) => Dispatch::Reply(Bytes::from(format!(":{}\r\n", self.id))),
            ("GETNAME", 2) => match &self.name {
                Some(name) => Dispatch::Reply(bulk(name)),
                None => Dispatch::Reply(Bytes::from_static(b"$-1\r\n")),
            },
            ("SETNAME", 3) => match self.set_name(args[2]) {
                Ok(()) => ok(),
                Err(e) => Dispatch::Reply(e),
            },
            ("SETINFO", 4) => {
                if !is(args.get(2), "LIB-NAME") && !is(args.get(2), "LIB-VER") {
                    let option = String::from_utf8_lossy(args[2]);
                    return Dispatch::Reply(Resp::error(&format!("ERR Unrecognized option '{option}'")));
                }
                if !valid_client_name(args[3]) {
                    return Dispatch::Reply(Resp::error(&format!(
                        "ERR {} cannot contain spaces, newlines or special characters.",
                        String::from_utf8_lossy(args[2])
                    )));
                }
                ok()
            }
            ("ID" | "GETNAME" | "SETNAME" | "SETINFO", _) => Self::arity(&format!("client|{}", sub.to_lowercase())),
            _ => Dispatch::Reply(Resp::error(&format!(
                "ERR resh: 'CLIENT {sub}' would act on resh's shared connection to each replica, not on yours; ordered mode serves CLIENT ID, GETNAME, SETNAME and SETINFO"
            ))),
        }
    }

    fn hello(&mut self, args: &[&[u8]]) -> Dispatch {
        let Some(version) = args.get(1) else {
            return Dispatch::Forward {
                request: encode_array(&["HELLO", "2"]),
                logged: false,
                shape: ReplyShape::Unvoted,
                publish: false,
            };
        };
        match string2ll(version) {
            Some(2) => {}
            Some(_) => return Dispatch::Reply(Resp::error("NOPROTO unsupported protocol version")),
            None => return Dispatch::Reply(Resp::error("ERR Protocol version is not an integer or out of range")),
        }
        let mut name = None;
        let mut at = 2;
        while at < args.len() {
            if is(args.get(at), "SETNAME") && at + 1 < args.len() {
                name = Some(args[at + 1]);
                at += 2;
            } else if is(args.get(at), "AUTH") {
                return Dispatch::Reply(Resp::error(
                    "ERR resh: AUTH keeps per-connection state, which ordered mode does not support (all sessions share one connection per replica)",
                ));
            } else {
                let option = String::from_utf8_lossy(args[at]);
                return Dispatch::Reply(Resp::error(&format!("ERR Syntax error in HELLO option '{option}'")));
            }
        }
        if let Some(name) = name {
            if let Err(e) = self.set_name(name) {
                return Dispatch::Reply(e);
            }
        }
        Dispatch::Forward {
            request: encode_array(&["HELLO", "2"]),
            logged: false,
            shape: ReplyShape::Unvoted,
            publish: false,
        }
    }
}

impl RespClient {
    /// The state of a new client, session `id`.
    pub(super) fn new(codec: Resp, id: u64) -> RespClient {
        RespClient {
            codec,
            id,
            name: None,
            transaction: None,
            watching: false,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            db: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ClientState for RespClient {
    fn listens(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty()
    }

    fn farewell(&mut self) -> Option<Part> {
        std::mem::take(&mut self.watching).then(|| watch_request(None))
    }

    fn dispatch(&mut self, request: &[u8], clock: &dyn Clock) -> Result<Dispatch, ProtocolError> {
        with_args(request, |rewrite, args| self.dispatch_args(&Incoming { request, rewrite, args }, clock))?
    }

    fn context(&self) -> Option<Context> {
        match self.db.load(Ordering::Relaxed) {
            0 => None,
            db => Some(Context { enter: select_request(db), leave: select_request(0) }),
        }
    }
}

/// `PUBSUB` (its arguments after the command): what resh's own publish/subscribe answers, with
/// Redis's errors for the forms it refuses. Shard channels: there are none (`SSUBSCRIBE` is
/// not served), so their lists are empty and their counts 0.
fn pubsub_query(args: &[&[u8]]) -> Dispatch {
    let Some(sub) = args.first() else { return RespClient::arity("pubsub") };
    let given = String::from_utf8_lossy(sub).into_owned();
    let sub = given.to_ascii_uppercase();
    let rest = &args[1..];
    let owned = |names: &[&[u8]]| names.iter().map(|n| Bytes::copy_from_slice(n)).collect::<Vec<_>>();
    let query = match sub.as_str() {
        "CHANNELS" if rest.len() <= 1 => PubSubQuery::Channels(rest.first().map(|p| Bytes::copy_from_slice(p))),
        "NUMSUB" => PubSubQuery::NumSub(owned(rest)),
        "NUMPAT" if rest.is_empty() => PubSubQuery::NumPat,
        "SHARDCHANNELS" if rest.len() <= 1 => return Dispatch::Reply(Bytes::from_static(b"*0\r\n")),
        "SHARDNUMSUB" => {
            let mut out = format!("*{}\r\n", rest.len() * 2).into_bytes();
            for name in rest {
                out.extend_from_slice(&bulk(name));
                out.extend_from_slice(b":0\r\n");
            }
            return Dispatch::Reply(Bytes::from(out));
        }
        // As Redis words them: CHANNELS checks its own arguments, NUMPAT and HELP have an
        // exact arity in the command table.
        "CHANNELS" | "SHARDCHANNELS" => {
            return Dispatch::Reply(Resp::error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{given}'. Try PUBSUB HELP."
            )));
        }
        "NUMPAT" => return RespClient::arity("pubsub|numpat"),
        "HELP" if rest.is_empty() => {
            let lines = [
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "SHARDCHANNELS [<pattern>]",
                "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                "SHARDNUMSUB [<shardchannel> ...]",
                "    Return the number of subscribers for the specified shard level channel(s)",
                "HELP",
                "    Prints this help.",
            ];
            let mut out = format!("*{}\r\n", lines.len()).into_bytes();
            for line in lines {
                out.extend_from_slice(format!("+{line}\r\n").as_bytes());
            }
            return Dispatch::Reply(Bytes::from(out));
        }
        "HELP" => return RespClient::arity("pubsub|help"),
        _ => return Dispatch::Reply(Resp::error(&format!("ERR unknown subcommand '{given}'. Try PUBSUB HELP."))),
    };
    Dispatch::PubSub(query)
}

/// The step of a `SELECT` of a new database: the replicas ran `MULTI`, `SELECT index`,
/// `SELECT 0`, `EXEC`. Taken, it is the session's database from now on; refused, the client
/// gets the replicas' error (`-ERR DB index is out of range`).
#[derive(Debug)]
struct Selected {
    index: u64,
    db: Arc<AtomicU64>,
}

impl Continuation for Selected {
    fn answered(self: Box<Self>, answer: &[u8], _now: std::time::Instant) -> Dispatch {
        let first = match shape::elements(answer) {
            Some((_, items)) if items.len() == 2 => items[0],
            // Not the two answers of a transaction that ran: the replicas' own error.
            _ if answer.first() == Some(&b'-') => return Dispatch::Reply(Bytes::copy_from_slice(answer)),
            _ => return Dispatch::Reply(Resp::error("ERR resh: the replicas did not take the database")),
        };
        if first == b"+OK\r\n" {
            self.db.store(self.index, Ordering::Relaxed);
        }
        Dispatch::Reply(Bytes::copy_from_slice(first))
    }
    fn woken(self: Box<Self>, _now: std::time::Instant) -> Dispatch {
        Dispatch::Reply(Resp::error("ERR resh: the replicas did not take the database"))
    }
}

impl RespClient {
    /// A request while a transaction is queued: Redis's rules for the commands that act on the
    /// transaction itself, and every other command queued (or refused, which aborts it).
    fn in_transaction(&mut self, incoming: &Incoming<'_>, clock: &dyn Clock) -> Dispatch {
        let (args, named) = (incoming.args, |name: &str| incoming.named(name));
        let whole = args.len() == 1;
        match () {
            _ if named("EXEC") && whole => {
                let transaction = self.transaction.take().unwrap_or_default();
                if transaction.aborted {
                    let abort = Resp::error("EXECABORT Transaction discarded because of previous errors.");
                    return self.unwatched(abort);
                }
                let mut requests = Vec::with_capacity(transaction.queued.len() + 2);
                requests.push(encode_array(&["MULTI"]));
                requests.extend(transaction.queued);
                requests.push(encode_array(&["EXEC"]));
                let classes = self.codec.classify_unit(&requests);
                let parts = requests.into_iter().zip(classes).map(|(request, class)| Part { request, class }).collect();
                // The order decides at the EXEC whether the watch is dirty.
                let watched = std::mem::take(&mut self.watching);
                if watched || !transaction.time_left.is_empty() {
                    let then =
                        ExecAnswer { watched, time_left: transaction.time_left, wall: clock.wall(), at: clock.now() };
                    return Dispatch::Ask { parts, then: Box::new(then) };
                }
                return Dispatch::Unit(parts);
            }
            _ if named("DISCARD") && whole => {
                self.transaction = None;
                return self.unwatched(Bytes::from_static(b"+OK\r\n"));
            }
            _ if named("RESET") && whole => {
                self.transaction = None;
                self.name = None;
                return self.unwatched(Bytes::from_static(b"+RESET\r\n"));
            }
            _ if named("MULTI") && whole => return Dispatch::Reply(Resp::error("ERR MULTI calls can not be nested")),
            _ if named("SELECT") => {
                if let Some(t) = self.transaction.as_mut() {
                    t.aborted = true;
                }
                return Dispatch::Reply(Resp::error(
                    "ERR resh: 'SELECT' cannot be part of a transaction (select the database before MULTI)",
                ));
            }
            _ if named("WATCH") => return Dispatch::Reply(Resp::error("ERR WATCH inside MULTI is not allowed")),
            _ if named("QUIT") => return Dispatch::Close(Bytes::from_static(b"+OK\r\n")),
            _ => {}
        }
        let time_left = ttl::queued_instead(upper(args[0]).as_str(), args)
            .filter(|_| self.codec.allowed(if named("TTL") { "TTL" } else { "PTTL" }));
        if let Some((instead, seconds)) = time_left {
            // Each replica would tell the time left from its own clock: see [`ttl`].
            if let Some(transaction) = self.transaction.as_mut() {
                if transaction.bytes + instead.len() <= self.codec.max_frame {
                    transaction.time_left.push((transaction.queued.len(), seconds));
                    transaction.bytes += instead.len();
                    transaction.queued.push(instead);
                    return Dispatch::Reply(Bytes::from_static(b"+QUEUED\r\n"));
                }
            }
        }
        let dispatch = if named("EXEC") || named("DISCARD") || named("MULTI") {
            RespClient::arity(&String::from_utf8_lossy(args[0]).to_lowercase())
        } else {
            match self.dispatch_plain(incoming, clock) {
                Ok(dispatch) => dispatch,
                Err(e) => Dispatch::Reply(self.codec.protocol_error(&e)),
            }
        };
        let Some(transaction) = self.transaction.as_mut() else { return dispatch };
        match dispatch {
            Dispatch::Forward { request, .. } => {
                if transaction.bytes + request.len() > self.codec.max_frame {
                    transaction.aborted = true;
                    return Dispatch::Reply(Resp::error(&format!(
                        "ERR resh: the transaction would be larger than ordered.max_frame_bytes ({})",
                        self.codec.max_frame
                    )));
                }
                transaction.bytes += request.len();
                transaction.queued.push(request);
                Dispatch::Reply(Bytes::from_static(b"+QUEUED\r\n"))
            }
            Dispatch::Reply(answer) => {
                transaction.aborted = true;
                if answer.first() == Some(&b'-') {
                    Dispatch::Reply(answer)
                } else {
                    let command = String::from_utf8_lossy(args[0]).to_ascii_uppercase();
                    Dispatch::Reply(Resp::error(&format!(
                        "ERR resh: '{command}' is answered by resh itself and cannot be part of a transaction"
                    )))
                }
            }
            Dispatch::Unit(_) => {
                transaction.aborted = true;
                Dispatch::Reply(Resp::error("ERR MULTI calls can not be nested"))
            }
            Dispatch::Ask { .. } | Dispatch::Later { .. } => {
                transaction.aborted = true;
                let command = String::from_utf8_lossy(args[0]).to_ascii_uppercase();
                Dispatch::Reply(Resp::error(&format!(
                    "ERR resh: '{command}' is served in steps of resh's own (a random pick checked by the quorum, or a blocking command's polls) and cannot be part of a transaction"
                )))
            }
            other @ (Dispatch::Close(_) | Dispatch::Ignore | Dispatch::Subscriptions { .. } | Dispatch::PubSub(_)) => {
                other
            }
        }
    }

    /// Publish/subscribe, served by resh (see `ordered::pubsub`), and Redis's subscribed mode:
    /// while subscribed, a RESP2 client may only (un)subscribe, PING, QUIT and RESET. `None`:
    /// not a matter of pub/sub.
    fn pubsub(&mut self, args: &[&[u8]]) -> Option<Dispatch> {
        let first = args.first()?;
        let subscribed = !self.channels.is_empty() || !self.patterns.is_empty();
        // The common case costs two byte comparisons: no pub/sub command starts otherwise.
        if !subscribed && !matches!(first.first().map(u8::to_ascii_uppercase), Some(b'S' | b'P' | b'U')) {
            return None;
        }
        let command = String::from_utf8_lossy(first).to_ascii_uppercase();
        let refuse = |why: &str| Some(Dispatch::Reply(Resp::error(why)));
        match command.as_str() {
            "SUBSCRIBE" | "PSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" if !self.codec.allowed(&command) => {
                refuse(&format!("ERR resh: command '{command}' is not in the allowed set of this service"))
            }
            "SUBSCRIBE" | "PSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" if self.transaction.is_some() => {
                if let Some(t) = self.transaction.as_mut() {
                    t.aborted = true;
                }
                refuse(&format!("ERR resh: '{command}' cannot be part of a transaction"))
            }
            "SUBSCRIBE" | "PSUBSCRIBE" if self.watching => {
                refuse(&format!("ERR resh: '{command}' while watching keys: UNWATCH first"))
            }
            "SUBSCRIBE" | "PSUBSCRIBE" if args.len() < 2 => {
                Some(RespClient::arity(&command.to_lowercase()))
            }
            "SUBSCRIBE" | "PSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" => {
                let pattern = command.starts_with('P');
                let adding = !command.contains("UNSUB");
                let kind = command.to_lowercase();
                let mut names: Vec<Bytes> = args[1..].iter().map(|a| Bytes::copy_from_slice(a)).collect();
                if !adding && names.is_empty() {
                    // All of them (in no particular order, as Redis).
                    let set = if pattern { &self.patterns } else { &self.channels };
                    names = set.iter().cloned().collect();
                    names.sort();
                }
                let mut reply = Vec::new();
                let mut changes = Vec::new();
                if names.is_empty() {
                    // Unsubscribing from nothing: Redis answers once, with a null name.
                    let count = self.channels.len() + self.patterns.len();
                    reply.extend_from_slice(format!("*3\r\n${}\r\n{kind}\r\n$-1\r\n:{count}\r\n", kind.len()).as_bytes());
                }
                for name in names {
                    let set = if pattern { &mut self.patterns } else { &mut self.channels };
                    let changed = if adding { set.insert(name.clone()) } else { set.remove(&name) };
                    if changed {
                        changes.push(if adding {
                            Subscription::Add { name: name.clone(), pattern }
                        } else {
                            Subscription::Remove { name: name.clone(), pattern }
                        });
                    }
                    let count = self.channels.len() + self.patterns.len();
                    reply.extend_from_slice(format!("*3\r\n${}\r\n{kind}\r\n", kind.len()).as_bytes());
                    reply.extend_from_slice(&bulk(&name));
                    reply.extend_from_slice(format!(":{count}\r\n").as_bytes());
                }
                Some(Dispatch::Subscriptions { changes, reply: Bytes::from(reply) })
            }
            "RESET" if subscribed && args.len() == 1 => {
                let changes = self.unsubscribe_all();
                self.name = None;
                self.transaction = None;
                Some(Dispatch::Subscriptions { changes, reply: Bytes::from_static(b"+RESET\r\n") })
            }
            "PING" if subscribed && args.len() <= 2 => {
                let message = args.get(1).copied().unwrap_or_default();
                let mut reply = b"*2\r\n$4\r\npong\r\n".to_vec();
                reply.extend_from_slice(&bulk(message));
                Some(Dispatch::Reply(Bytes::from(reply)))
            }
            "QUIT" | "RESET" | "PING" if subscribed => None,
            _ if subscribed => refuse(&format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                command.to_lowercase()
            )),
            "PUBSUB" if !self.codec.allowed(&command) => {
                refuse(&format!("ERR resh: command '{command}' is not in the allowed set of this service"))
            }
            "PUBSUB" if self.transaction.is_some() => {
                if let Some(t) = self.transaction.as_mut() {
                    t.aborted = true;
                }
                refuse("ERR resh: 'PUBSUB' is answered by resh itself and cannot be part of a transaction")
            }
            "PUBSUB" => Some(pubsub_query(&args[1..])),
            "SSUBSCRIBE" | "SUNSUBSCRIBE" | "SPUBLISH" => refuse(&format!(
                "ERR resh: '{command}' is not served: resh serves SUBSCRIBE, PSUBSCRIBE, their UNSUBSCRIBE, PUBLISH and PUBSUB itself"
            )),
            _ => None,
        }
    }

    /// `SELECT index`: Redis's errors for an index that is not one; the current database again,
    /// or 0, at once; another one once the replicas took it (see [`Selected`]).
    fn select(&mut self, index: &[u8]) -> Dispatch {
        let Some(index) = string2ll(index) else {
            return Dispatch::Reply(Resp::error("ERR value is not an integer or out of range"));
        };
        if i32::try_from(index).is_err() {
            return Dispatch::Reply(Resp::error(
                "ERR value is out of range, value must between -2147483648 and 2147483647",
            ));
        }
        let Ok(index) = u64::try_from(index) else {
            return Dispatch::Reply(Resp::error("ERR DB index is out of range"));
        };
        if index == 0 || index == self.db.load(Ordering::Relaxed) {
            self.db.store(index, Ordering::Relaxed);
            return Dispatch::Reply(Bytes::from_static(b"+OK\r\n"));
        }
        let tried = [encode_array(&[OWN_MULTI]), select_request(index), select_request(0), encode_array(&[OWN_EXEC])];
        let last = tried.len() - 1;
        let parts = tried
            .into_iter()
            .enumerate()
            .map(|(i, request)| Part {
                request,
                class: RequestClass { logged: true, continues: i < last, ..RequestClass::default() },
            })
            .collect();
        Dispatch::Ask { parts, then: Box::new(Selected { index, db: Arc::clone(&self.db) }) }
    }

    /// Answers `reply`, once the end of the session's watch is ordered if it has one.
    fn unwatched(&mut self, reply: Bytes) -> Dispatch {
        if !std::mem::take(&mut self.watching) {
            return Dispatch::Reply(reply);
        }
        Dispatch::Ask { parts: vec![watch_request(None)], then: Box::new(Answered(reply)) }
    }

    /// Every subscription goes (RESET, or the session's end).
    fn unsubscribe_all(&mut self) -> Vec<Subscription> {
        let channels = self.channels.drain().map(|name| Subscription::Remove { name, pattern: false });
        let patterns = self.patterns.drain().map(|name| Subscription::Remove { name, pattern: true });
        channels.chain(patterns).collect()
    }

    fn dispatch_args(&mut self, incoming: &Incoming<'_>, clock: &dyn Clock) -> Result<Dispatch, ProtocolError> {
        let (args, named) = (incoming.args, |name: &str| incoming.named(name));
        let Some(first) = args.first() else { return Ok(Dispatch::Ignore) };
        if let Some(pubsub) = self.pubsub(args) {
            return Ok(pubsub);
        }
        if self.transaction.is_some() {
            return Ok(self.in_transaction(incoming, clock));
        }
        let own = ["MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH"];
        let limited = self.codec.allow.is_some();
        if let Some(command) = own.iter().find(|c| limited && named(c)).filter(|c| !self.codec.allowed(c)) {
            return Ok(Dispatch::Reply(Resp::error(&format!(
                "ERR resh: command '{command}' is not in the allowed set of this service"
            ))));
        }
        match () {
            _ if (named("MULTI") || named("EXEC") || named("DISCARD")) && args.len() > 1 => {
                return Ok(RespClient::arity(&String::from_utf8_lossy(first).to_lowercase()));
            }
            _ if named("MULTI") => {
                self.transaction = Some(Transaction::default());
                return Ok(Dispatch::Reply(Bytes::from_static(b"+OK\r\n")));
            }
            _ if named("EXEC") => return Ok(Dispatch::Reply(Resp::error("ERR EXEC without MULTI"))),
            _ if named("DISCARD") => return Ok(Dispatch::Reply(Resp::error("ERR DISCARD without MULTI"))),
            _ if named("WATCH") && args.len() < 2 => return Ok(RespClient::arity("watch")),
            _ if named("WATCH") => {
                self.watching = true;
                let parts = vec![watch_request(Some(&args[1..]))];
                return Ok(Dispatch::Ask { parts, then: Box::new(Answered(Bytes::from_static(b"+OK\r\n"))) });
            }
            _ if named("UNWATCH") && args.len() > 1 => return Ok(RespClient::arity("unwatch")),
            _ if named("UNWATCH") => return Ok(self.unwatched(Bytes::from_static(b"+OK\r\n"))),
            _ => {}
        }
        self.dispatch_plain(incoming, clock)
    }

    /// A request outside what acts on a transaction.
    fn dispatch_plain(&mut self, incoming: &Incoming<'_>, clock: &dyn Clock) -> Result<Dispatch, ProtocolError> {
        let Incoming { request, rewrite, args } = *incoming;
        let named = |name: &str| incoming.named(name);
        let Some(first) = args.first() else { return Ok(Dispatch::Ignore) };
        // Only the few commands answered here pay for comparisons: the common case is a length
        // check and a byte or two.
        if first.len() <= 6 {
            match () {
                // A client's PING that looks like resh's own WATCH marker is answered here (as
                // Redis would: its argument back), so that the order never takes it for one.
                _ if named("PING")
                    && args.len() == 2
                    && (args[1].starts_with(WATCH_MARKER) || args[1] == UNWATCH_MARKER) =>
                {
                    return Ok(Dispatch::Reply(bulk(args.get(1).copied().unwrap_or_default())));
                }
                _ if named("CLIENT") => return Ok(self.client_command(args)),
                _ if named("HELLO") => return Ok(self.hello(args)),
                _ if named("RESET") && args.len() == 1 => {
                    self.name = None;
                    self.db.store(0, Ordering::Relaxed);
                    return Ok(self.unwatched(Bytes::from_static(b"+RESET\r\n")));
                }
                _ if named("SELECT") && args.len() == 2 => return Ok(self.select(args[1])),
                _ if named("TIME") && args.len() == 1 => {
                    let since = clock.wall().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    let (secs, micros) = (since.as_secs().to_string(), since.subsec_micros().to_string());
                    return Ok(Dispatch::Reply(encode_array(&[secs, micros])));
                }
                _ => {}
            }
        }
        let pins_time = ["EXPIRE", "PEXPIRE", "SETEX", "PSETEX", "SET", "GETEX", "XADD"].iter().any(|n| named(n));
        if pins_time {
            if let Some(pinned) = pin_time(upper(first).as_str(), args, clock) {
                let pinned: Vec<&[u8]> = pinned.iter().map(Vec::as_slice).collect();
                let request = encode_array(&pinned);
                return Ok(self.codec.dispatch_args(&request, false, &pinned, Some(clock)));
            }
        }
        Ok(self.codec.dispatch_args(request, rewrite, args, Some(clock)))
    }
}

/// The newest millisecond resh gave an `XADD` id: ids stay monotonic if the clock steps back.
pub(super) static LAST_XADD_MS: AtomicU64 = AtomicU64::new(0);

/// A positive count of seconds or milliseconds as Redis parses it, in milliseconds; `None` for
/// anything Redis would refuse (its error is then the replicas').
fn positive_ms(arg: &[u8], unit_ms: i64) -> Option<i64> {
    string2ll(arg).filter(|&n| n > 0).and_then(|n| n.checked_mul(unit_ms))
}

/// Rewrites what would make replicas differ by when each executes a request into one value
/// resh chose: a relative expiration becomes absolute (as Redis's own replication does), so
/// replicas, and a replica rebuilt by replay later, expire the key at the same moment; `XADD *`
/// gets its millisecond from resh (the sequence within it stays Redis's, deterministic).
/// `None`: the request is sent as it is.
fn pin_time(command: &str, args: &[&[u8]], clock: &dyn Clock) -> Option<Vec<Vec<u8>>> {
    let owned = |args: &[&[u8]]| args.iter().map(|a| a.to_vec()).collect::<Vec<_>>();
    // The clock is read only for a request that is rewritten (most SETs have no expiration).
    let now_ms = || {
        let since = clock.wall().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    };
    let at = |ms: i64| now_ms().checked_add(ms).map(|t| t.to_string().into_bytes());
    match command {
        "EXPIRE" | "PEXPIRE" if args.len() >= 3 => {
            let unit = if command == "EXPIRE" { 1000 } else { 1 };
            let mut out = owned(args);
            out[0] = b"PEXPIREAT".to_vec();
            out[2] = at(positive_ms(args[2], unit)?)?;
            Some(out)
        }
        "SETEX" | "PSETEX" if args.len() == 4 => {
            let unit = if command == "SETEX" { 1000 } else { 1 };
            let when = at(positive_ms(args[2], unit)?)?;
            Some(vec![b"SET".to_vec(), args[1].to_vec(), args[3].to_vec(), b"PXAT".to_vec(), when])
        }
        "SET" | "GETEX" => {
            let first = if command == "SET" { 3 } else { 2 };
            let i = (first..args.len()).find(|&i| is(args.get(i), "EX") || is(args.get(i), "PX"))?;
            let unit = if is(args.get(i), "EX") { 1000 } else { 1 };
            let mut out = owned(args);
            out[i] = b"PXAT".to_vec();
            *out.get_mut(i + 1)? = at(positive_ms(args.get(i + 1)?, unit)?)?;
            Some(out)
        }
        "XADD" => {
            // XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] id field value...
            let mut i = 2;
            loop {
                if is(args.get(i), "NOMKSTREAM") {
                    i += 1;
                } else if is(args.get(i), "MAXLEN") || is(args.get(i), "MINID") {
                    i += 1;
                    if matches!(args.get(i).copied(), Some(b"=" | b"~")) {
                        i += 1;
                    }
                    i += 1;
                    if is(args.get(i), "LIMIT") {
                        i += 2;
                    }
                } else {
                    break;
                }
            }
            if args.get(i).copied() != Some(b"*") {
                return None;
            }
            let now = u64::try_from(now_ms()).ok()?;
            let ms = LAST_XADD_MS.fetch_max(now, Ordering::Relaxed).max(now);
            let mut out = owned(args);
            out[i] = format!("{ms}-*").into_bytes();
            Some(out)
        }
        _ => None,
    }
}

/// What a session answers once its step is done, whatever the replicas echoed.
#[derive(Debug)]
struct Answered(Bytes);

impl Continuation for Answered {
    fn answered(self: Box<Self>, _answer: &[u8], _now: std::time::Instant) -> Dispatch {
        Dispatch::Reply(self.0)
    }
    fn woken(self: Box<Self>, _now: std::time::Instant) -> Dispatch {
        Dispatch::Reply(self.0)
    }
}

/// The EXEC of a transaction whose answer resh finishes: if it was watched, a DISCARD's `+OK`
/// means its watch was dirty (nil, as Redis answers); the answers of `TTL` and `PTTL`, queued
/// as `PEXPIRETIME`, are made from the voted expiry and resh's clock (see [`ttl`]). Anything
/// else is EXEC's own answer.
#[derive(Debug)]
struct ExecAnswer {
    watched: bool,
    time_left: Vec<(usize, bool)>,
    /// The time of day at `at`.
    wall: SystemTime,
    at: std::time::Instant,
}

impl Continuation for ExecAnswer {
    fn answered(self: Box<Self>, answer: &[u8], now: std::time::Instant) -> Dispatch {
        if self.watched && answer == b"+OK\r\n" {
            return Dispatch::Reply(Bytes::from_static(b"*-1\r\n"));
        }
        let Some((b'*', mut items)) = shape::elements(answer)
            .map(|(kind, items)| (kind, items.into_iter().map(Bytes::copy_from_slice).collect::<Vec<_>>()))
        else {
            return Dispatch::Reply(Bytes::copy_from_slice(answer));
        };
        let wall = self.wall + now.saturating_duration_since(self.at);
        for &(i, seconds) in &self.time_left {
            let Some(item) = items.get_mut(i) else { continue };
            match ttl::integer_of(item) {
                // No such key, or no expiry: the same in either unit.
                Some(n) if n < 0 => {}
                Some(expires) => *item = ttl::time_left(expires, seconds, wall),
                // An error (a server without PEXPIRETIME): as it is.
                None => {}
            }
        }
        let mut out = BytesMut::from(format!("*{}\r\n", items.len()).as_bytes());
        for item in items {
            out.extend_from_slice(&item);
        }
        Dispatch::Reply(out.freeze())
    }
    fn woken(self: Box<Self>, _now: std::time::Instant) -> Dispatch {
        Dispatch::Reply(Resp::error("ERR resh: internal: a transaction woken"))
    }
}
