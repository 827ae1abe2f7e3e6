//! One client session in ordered mode.
//!
//! One task frames the client's requests (resumably: a large request arriving in many reads is
//! parsed once), hands each one to the order (or answers it locally, as the codec says), and
//! writes the answers back in request order, so pipelining clients (`redis-benchmark -P 16`)
//! work. Phases, each round:
//! 1. **submit** the complete requests already read, while the session has fewer than
//!    `max_in_flight` requests waiting and holds less than `max_session_bytes` of answers;
//! 2. **wait** for whichever comes first: an answer (it fills its request's slot), room in the
//!    client's socket (answers go out in order), more client input (read only when step 1
//!    could go on), or a deadline;
//! 3. **end** after a client's close once every answer is out; after a malformed request (its
//!    protocol error is the last answer), QUIT, or an undecidable vote (the codec's error is
//!    the last answer, nothing after it).
//!
//! Some requests are answered in steps the codec drives ([`Dispatch::Ask`], [`Dispatch::Later`]):
//! a random pick checked by the quorum, a blocking command that polls. The step's requests are
//! numbered after any the client sent later, so answers are matched to slots by number; and
//! while a step is under way the session submits nothing more, so the client's later requests
//! run after it, as on one server. A transaction goes as one unit ([`Dispatch::Unit`]); the
//! answers to its MULTI and queued commands are hidden (resh answered them itself). A client
//! whose requests need a connection state of their own ([`ClientState::context`]: a Redis
//! database other than 0) has each submission ordered between the context's `enter` and
//! `leave`, as one unit; their answers are hidden too.
//!
//! Bounds: a client that stops reading its answers stops being read (step 1); one that holds
//! more than `max_session_bytes + max_frame_bytes` of answers, or takes nothing for the idle
//! timeout, is disconnected. Sessions together stop reading their clients while they hold more
//! than `max_held_bytes` of answers. Nothing here can exclude a replica: a slow client is the
//! client's problem.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use super::{Answer, Ordered, SequencerGone, SessionNotice, Submission};
use crate::codec::{AnswerError, Codec, Context, Continuation, Dispatch, Part, RequestClass, SystemClock};
use crate::metrics::Verdict;
use crate::server::{Shared, Stopping};

/// The most a session reads from its client at once.
const READ_CHUNK: usize = 64 * 1024;

/// An answer slot, in request order.
#[derive(Debug)]
enum AnswerSlot {
    /// Ready to go out.
    Ready(Bytes),
    /// Waiting for the answer to request `n`.
    Pending(u64),
    /// Waiting for the answer to request `n`, which the client does not see (a part of a
    /// transaction before its EXEC: resh answered the client's MULTI and commands itself).
    Hidden(u64),
    /// Waiting for the answer to request `waiting` (one of the step's requests `hidden`, whose
    /// other answers are not shown), which goes to `then`: a step of a request resh answers by
    /// asking the replicas more than once.
    Chained { waiting: u64, hidden: Range<u64>, then: Box<dyn Continuation> },
    /// A step of such a request that waits until `until` (a blocking command between polls).
    Delayed { until: Instant, then: Box<dyn Continuation> },
    /// The last answer: the session ends after it.
    Last(Bytes),
}

/// How the session ended, for the log and the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The client closed its side and got every answer, or sent QUIT or a malformed request.
    Done,
    /// An answer was undecidable: the session was aborted after its error.
    Undecidable,
    /// The client went away, or was disconnected for not reading or being idle.
    Dropped,
}

/// Serves one client in ordered mode.
pub async fn serve(shared: Arc<Shared>, ordered: Ordered, client: TcpStream, peer: SocketAddr, id: u64) {
    let span = tracing::info_span!("session", id, %peer);
    run(shared, ordered, client, id).instrument(span).await
}

/// This session's share of the answer bytes all sessions hold.
struct HeldAnswers<'a> {
    ordered: &'a Ordered,
    mine: usize,
}

impl HeldAnswers<'_> {
    fn add(&mut self, n: usize) {
        self.mine += n;
        self.ordered.buffered().fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&mut self, n: usize) {
        let n = n.min(self.mine);
        self.mine -= n;
        self.ordered.buffered().fetch_sub(n, Ordering::Relaxed);
    }
}

impl Drop for HeldAnswers<'_> {
    fn drop(&mut self) {
        let mine = self.mine;
        self.sub(mine);
    }
}

async fn run(shared: Arc<Shared>, ordered: Ordered, mut client: TcpStream, id: u64) {
    let _ = client.set_nodelay(true);
    shared.metrics.session_started();
    let config = shared.config();
    let limits = &config.ordered;
    let idle = config.idle_timeout();
    let codec = Arc::clone(&ordered.codec);
    let mut client_state = codec.client(id);
    let mut registration = ordered.register(id);
    let mut parser = codec.request_parser();
    // Borrowed halves, not owned ones: an owned write half shuts the connection down (a FIN)
    // when dropped, so a session aborted on shutdown would send a FIN before the reset its zero
    // linger time makes (see `server::serve`), and a client could take what it got as complete.
    let (mut read, mut write) = client.split();
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut slots: VecDeque<AnswerSlot> = VecDeque::new();
    let mut out = BytesMut::new();
    let mut held = HeldAnswers { ordered: &ordered, mine: 0 };
    let mut next_request = 0u64;
    // The last request answered: answers come in request order.
    let mut last_answered: Option<u64> = None;
    // A slot is `Chained`: a request resh answers in steps is under way.
    let mut chain_pending = false;
    // A chained slot changed: whether one is still under way is to be seen.
    let mut recheck_chain = false;
    let mut in_flight = 0usize;
    // The client sent its last request (closed its side, QUIT, a malformed request).
    let mut input_done = false;
    let mut end: Option<End> = None;
    let mut masked = false;
    let mut last_activity = Instant::now();
    let mut blocked_since: Option<Instant> = None;
    let hard_limit = limits.max_session_bytes.saturating_add(limits.max_frame_bytes);
    // One timer for the session, moved when the deadline moves: a new `sleep_until` per
    // loop turn cost a timer registration per answer.
    let idle_timer = tokio::time::sleep_until(last_activity + idle);
    tokio::pin!(idle_timer);
    // The earliest wait of a step (a blocking command between polls).
    let step_timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(step_timer);
    // A shutdown comes as a `SessionNotice::Stopping` (see `Ordered::notify_stopping`), or is
    // under way already when the session registers: draining, the session reads no more from
    // its client, submits the requests it has read, and closes once their answers are out; cut
    // off, it ends at once (a reset if anything was owed).
    let mut draining = *shared.stopping().borrow() != Stopping::No;
    let started = Instant::now();
    let (mut from_client, mut to_client) = (0u64, 0u64);

    'session: loop {
        if std::mem::take(&mut recheck_chain) {
            chain_pending = slots.iter().any(AnswerSlot::in_steps);
        }
        // 1. Submit what was read, within the bounds. Not while a request resh answers in
        // steps is under way: the client's later requests must run after it, as on one
        // server (a SADD after an SPOP must not run between the SPOP's pick and its pop).
        while !input_done && in_flight < limits.max_in_flight && held.mine < limits.max_session_bytes && !chain_pending
        {
            let len = match parser.parse(&input) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    info!(error = %e, "malformed request: closing after the protocol error");
                    slots.push_back(AnswerSlot::Last(codec.protocol_error(&e)));
                    input_done = true;
                    break;
                }
            };
            let request = input.split_to(len);
            // A client in a context of its own (see `ClientState::context`) has even a lone
            // request ordered as a unit.
            let dispatch = client_state.dispatch(&request, &SystemClock);
            let context = client_state.context();
            let dispatch = match dispatch {
                Ok(Dispatch::Forward { request, logged, shape, publish }) if context.is_some() => {
                    let class = RequestClass { logged, shape, publish, ..RequestClass::default() };
                    Ok(Dispatch::Unit(vec![Part { request, class }]))
                }
                other => other,
            };
            match dispatch {
                Ok(Dispatch::Forward { request, logged, shape, publish }) => {
                    let n = next_request;
                    next_request += 1;
                    let class = RequestClass { logged, shape, publish, ..RequestClass::default() };
                    let submission = Submission { session: id, request: n, bytes: request, class, more: Vec::new() };
                    if ordered.submit(submission).await.is_err() {
                        end = Some(End::Dropped);
                        break 'session;
                    }
                    in_flight += 1;
                    slots.push_back(AnswerSlot::Pending(n));
                }
                Ok(Dispatch::Unit(parts)) => {
                    let Ok(()) =
                        submit_unit(&ordered, id, &mut next_request, parts, context, &mut slots, &mut in_flight).await
                    else {
                        end = Some(End::Dropped);
                        break 'session;
                    };
                }
                Ok(step @ (Dispatch::Ask { .. } | Dispatch::Later { .. })) => {
                    let Ok(slot) =
                        step_slot(step, &ordered, id, &mut next_request, &mut in_flight, &*codec, context).await
                    else {
                        end = Some(End::Dropped);
                        break 'session;
                    };
                    slots.push_back(slot);
                    chain_pending = true;
                    break;
                }
                Ok(Dispatch::Reply(answer)) => slots.push_back(AnswerSlot::Ready(answer)),
                Ok(Dispatch::PubSub(query)) => {
                    slots.push_back(AnswerSlot::Ready(codec.pubsub_reply(&ordered.pubsub(&query))))
                }
                Ok(Dispatch::Subscriptions { changes, reply }) => {
                    ordered.subscriptions(id, changes);
                    slots.push_back(AnswerSlot::Ready(reply));
                }
                Ok(Dispatch::Close(answer)) => {
                    slots.push_back(AnswerSlot::Last(answer));
                    input_done = true;
                }
                Ok(Dispatch::Ignore) => {}
                Err(e) => {
                    info!(error = %e, "malformed request: closing after the protocol error");
                    slots.push_back(AnswerSlot::Last(codec.protocol_error(&e)));
                    input_done = true;
                }
            }
        }
        // Answers that are ready go out in order; a last answer ends the session.
        while matches!(slots.front(), Some(AnswerSlot::Ready(_) | AnswerSlot::Last(_))) {
            match slots.pop_front() {
                Some(AnswerSlot::Ready(answer)) => {
                    held.add(answer.len());
                    out.extend_from_slice(&answer);
                }
                Some(AnswerSlot::Last(answer)) => {
                    held.add(answer.len());
                    out.extend_from_slice(&answer);
                    input_done = true;
                    end.get_or_insert(End::Done);
                    slots.clear();
                    chain_pending = false;
                    in_flight = 0;
                }
                _ => {}
            }
        }
        if held.mine > hard_limit {
            warn!(
                held = held.mine,
                limit = hard_limit,
                "client does not read its answers: disconnecting (ordered.max_session_bytes + max_frame_bytes)"
            );
            end = Some(End::Dropped);
            break;
        }
        if input_done && slots.is_empty() && out.is_empty() {
            end.get_or_insert(End::Done);
            break;
        }
        // Draining and every request read was answered (nothing waits, so the submit loop ran
        // until it found no whole request): a partial one left is a request cut off.
        if draining && slots.is_empty() && out.is_empty() {
            end = Some(if input.is_empty() { End::Done } else { End::Dropped });
            break;
        }

        // 2. Wait for an answer, the client, or a deadline.
        let can_read = !input_done
            && !draining
            && !chain_pending
            && in_flight < limits.max_in_flight
            && held.mine < limits.max_session_bytes
            && ordered.buffered_bytes() < limits.max_held_bytes
            && input.len() < limits.max_frame_bytes + READ_CHUNK;
        let deadline = match blocked_since {
            Some(since) => since + idle,
            None => last_activity + idle,
        };
        // Waiting for the service is not idleness: the request timeout covers it; nor is a
        // blocking command's wait (its own timeout covers it).
        // A subscriber waits for messages as long as it likes.
        let idle_applies = !out.is_empty() || (in_flight == 0 && !chain_pending && !client_state.listens());
        let next_step = if chain_pending {
            slots
                .iter()
                .filter_map(|s| match s {
                    AnswerSlot::Delayed { until, .. } => Some(*until),
                    _ => None,
                })
                .min()
        } else {
            None
        };
        if let Some(until) = next_step.filter(|u| *u != step_timer.deadline()) {
            step_timer.as_mut().reset(until);
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(READ_CHUNK);
        }
        if idle_applies && idle_timer.deadline() != deadline {
            idle_timer.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            notice = registration.answers.recv() => {
                let answer = match notice {
                    Some(SessionNotice::Answer(answer)) => answer,
                    Some(SessionNotice::Masked) => {
                        masked = true;
                        continue;
                    }
                    Some(SessionNotice::Stopping(Stopping::No)) => continue,
                    Some(SessionNotice::Stopping(Stopping::Drain)) => {
                        if !input_done {
                            debug!("draining: no more requests from this client");
                        }
                        draining = true;
                        continue;
                    }
                    Some(SessionNotice::Stopping(Stopping::Now)) => {
                        if slots.is_empty() && out.is_empty() && input.is_empty() {
                            end.get_or_insert(End::Done);
                        } else {
                            info!(owed = slots.len(), unsent = out.len(), "resh stopped: cutting the session off (reset)");
                            end = Some(End::Dropped);
                        }
                        break;
                    }
                    Some(SessionNotice::Push(message)) => {
                        // After the answers the client is owed before it (in order, as Redis).
                        slots.push_back(AnswerSlot::Ready(message));
                        continue;
                    }
                    Some(SessionNotice::Ended(e)) => {
                        info!(reason = ?e, "session ended by the group: this host stopped serving");
                        let text = codec.answer_error(&e).unwrap_or_default();
                        recheck_chain = true;
                        match slots.iter_mut().find(|s| s.waiting().is_some()) {
                            Some(slot) => *slot = AnswerSlot::Last(text),
                            None => slots.push_back(AnswerSlot::Last(text)),
                        }
                        input_done = true;
                        continue;
                    }
                    None => {
                        end = Some(End::Dropped);
                        break;
                    }
                };
                // Answers come in request order; a chained step's requests were numbered after
                // requests that came later from the client, so the slot is looked up.
                if last_answered.is_some_and(|l| l >= answer.request) {
                    error!(got = answer.request, "internal: an answer out of order; closing the session");
                    end = Some(End::Dropped);
                    break;
                }
                last_answered = Some(answer.request);
                // None: the session's last answer is out already (an undecidable request ended
                // it), and what came after it is not answered.
                let Some(at) = slots.iter().position(|s| s.answers(answer.request)) else { continue };
                if slots[at].in_steps() {
                    // Whatever this answer does to the step, see afterwards whether one is
                    // still under way (rare: only such slots pay for the look).
                    recheck_chain = true;
                }
                in_flight -= 1;
                masked |= answer.masked;
                if let AnswerSlot::Chained { waiting, .. } = &slots[at] {
                    if *waiting == answer.request {
                        let AnswerSlot::Chained { then, hidden, .. } = std::mem::replace(&mut slots[at], AnswerSlot::Pending(answer.request)) else { continue };
                        // The step's requests after the one whose answer is awaited (a
                        // context's `leave`) are still to be answered, hidden.
                        for (k, trailing) in (answer.request + 1..hidden.end).enumerate() {
                            slots.insert(at + 1 + k, AnswerSlot::Hidden(trailing));
                        }
                        let next = match answer.answer {
                            Answer::Frame(bytes) => then.answered(&bytes, std::time::Instant::now()),
                            // resh's own error ends the steps: the client gets it.
                            Answer::Error(e) => {
                                answer_slot(&mut slots[at], Answer::Error(e), &*codec, &mut end);
                                continue;
                            }
                        };
                        let Ok(slot) = step_slot(next, &ordered, id, &mut next_request, &mut in_flight, &*codec, client_state.context()).await else {
                            end = Some(End::Dropped);
                            break;
                        };
                        slots[at] = slot;
                        continue;
                    }
                }
                if matches!(slots[at], AnswerSlot::Hidden(_) | AnswerSlot::Chained { .. }) {
                    // The answers to a transaction's MULTI and queued commands are not the
                    // client's (its EXEC answer says how the transaction went), unless resh
                    // can no longer vouch for anything after them.
                    match answer.answer {
                        Answer::Error(e @ (AnswerError::Undecidable | AnswerError::Fenced)) => {
                            if e == AnswerError::Undecidable {
                                end = Some(End::Undecidable);
                            }
                            slots[at] = AnswerSlot::Last(codec.answer_error(&e).unwrap_or_default());
                        }
                        _ => {
                            if matches!(slots[at], AnswerSlot::Hidden(_)) {
                                slots.remove(at);
                            }
                        }
                    }
                    continue;
                }
                answer_slot(&mut slots[at], answer.answer, &*codec, &mut end);
            }
            written = write.write(&out), if !out.is_empty() => match written {
                Ok(n) if n > 0 => {
                    out.advance(n);
                    held.sub(n);
                    shared.metrics.client_out(n);
                    to_client += n as u64;
                    last_activity = Instant::now();
                    blocked_since = if out.is_empty() { None } else { Some(last_activity) };
                }
                _ => {
                    debug!("client connection failed: it takes no more answers");
                    end = Some(End::Dropped);
                    break;
                }
            },
            got = read.read_buf(&mut input), if can_read => match got {
                Ok(0) => input_done = true,
                Ok(n) => {
                    shared.metrics.client_in(n);
                    from_client += n as u64;
                    last_activity = Instant::now();
                }
                Err(e) => {
                    debug!(error = %e, "client connection failed");
                    end = Some(End::Dropped);
                    break;
                }
            },
            _ = &mut step_timer, if next_step.is_some() => {
                let now = Instant::now();
                for slot in slots.iter_mut() {
                    if !matches!(slot, AnswerSlot::Delayed { until, .. } if *until <= now) {
                        continue;
                    }
                    let AnswerSlot::Delayed { then, .. } = std::mem::replace(slot, AnswerSlot::Ready(Bytes::new())) else { continue };
                    let next = then.woken(now.into_std());
                    let Ok(step) = step_slot(next, &ordered, id, &mut next_request, &mut in_flight, &*codec, client_state.context()).await else {
                        end = Some(End::Dropped);
                        break 'session;
                    };
                    *slot = step;
                }
                recheck_chain = true;
            }
            _ = &mut idle_timer, if idle_applies => {
                if !out.is_empty() {
                    info!(idle_ms = idle.as_millis() as u64, "client took no answers for the idle timeout: disconnecting");
                    end = Some(End::Dropped);
                } else {
                    // Nothing owed either way: a plain close.
                    info!(idle_ms = idle.as_millis() as u64, "closing idle session");
                    end = Some(End::Done);
                }
                break;
            }
        }
        if out.is_empty() {
            blocked_since = None;
        } else if blocked_since.is_none() {
            blocked_since = Some(Instant::now());
        }
    }
    // A watch the session still holds ends in the order too (its answer goes nowhere).
    if let Some(part) = client_state.farewell() {
        let _ = submit_parts(&ordered, id, &mut next_request, vec![part]).await;
    }
    let end = end.unwrap_or(End::Dropped);
    match end {
        End::Done | End::Undecidable => {
            let _ = write.shutdown().await;
            if draining {
                // The client's later requests, unread, would make the close a reset.
                crate::server::discard_input(&mut read, std::time::Duration::from_millis(500)).await;
            }
            // The zero linger time set at accept (see `server::serve`) would make the close a
            // reset.
            let _ = crate::sys::clear_linger(&client);
        }
        End::Dropped => {
            // Unanswered requests or unsent answers: a reset (the zero linger time set at
            // accept), so a client cannot take the close for the end of a complete exchange.
            let _ = client.set_zero_linger();
        }
    }
    drop(held);
    let verdict = match end {
        End::Undecidable => {
            warn!("session ended: a request's vote was undecidable");
            Verdict::Undecidable
        }
        _ if masked => Verdict::Masked,
        _ => Verdict::Agreed,
    };
    shared.metrics.session_ended(verdict);
    // One line per session, as an access log has it (the span adds the session id and client).
    info!(
        verdict = verdict.name(),
        close = if end == End::Dropped { "reset" } else { "fin" },
        duration_ms = started.elapsed().as_millis() as u64,
        requests = next_request,
        from_client,
        to_client,
        "session ended"
    );
}

impl AnswerSlot {
    /// The request whose answer this slot waits for.
    fn waiting(&self) -> Option<u64> {
        match self {
            AnswerSlot::Pending(n) | AnswerSlot::Hidden(n) | AnswerSlot::Chained { waiting: n, .. } => Some(*n),
            AnswerSlot::Ready(_) | AnswerSlot::Last(_) | AnswerSlot::Delayed { .. } => None,
        }
    }

    /// Part of a request resh answers in steps (asking, or waiting between asks).
    fn in_steps(&self) -> bool {
        matches!(self, AnswerSlot::Chained { .. } | AnswerSlot::Delayed { .. })
    }

    /// Whether the answer to request `n` belongs to this slot.
    fn answers(&self, n: u64) -> bool {
        match self {
            AnswerSlot::Chained { waiting, hidden, .. } => *waiting == n || hidden.contains(&n),
            _ => self.waiting() == Some(n),
        }
    }
}

/// Fills a slot waiting for the client's answer.
fn answer_slot(slot: &mut AnswerSlot, answer: Answer, codec: &dyn Codec, end: &mut Option<End>) {
    *slot = match answer {
        Answer::Frame(bytes) => AnswerSlot::Ready(bytes),
        Answer::Error(e @ (AnswerError::Undecidable | AnswerError::Fenced)) => {
            if e == AnswerError::Undecidable {
                *end = Some(End::Undecidable);
            }
            AnswerSlot::Last(codec.answer_error(&e).unwrap_or_default())
        }
        Answer::Error(e) => AnswerSlot::Ready(codec.answer_error(&e).unwrap_or_default()),
    };
}

/// Orders `parts` as one unit (in the client's context, if it has one): the client's answer is
/// the last part's, the others' are hidden.
async fn submit_unit(
    ordered: &Ordered,
    session: u64,
    next_request: &mut u64,
    parts: Vec<Part>,
    context: Option<Context>,
    slots: &mut VecDeque<AnswerSlot>,
    in_flight: &mut usize,
) -> Result<(), SequencerGone> {
    let (parts, answer) = in_context(parts, context);
    let requests = submit_parts(ordered, session, next_request, parts).await?;
    *in_flight += requests.clone().count();
    let shown = requests.start + answer as u64;
    slots.extend(requests.map(|r| if r == shown { AnswerSlot::Pending(r) } else { AnswerSlot::Hidden(r) }));
    Ok(())
}

/// `parts` in the client's context, if it has one; and the index of the part whose answer is
/// the client's (the last of `parts`).
fn in_context(parts: Vec<Part>, context: Option<Context>) -> (Vec<Part>, usize) {
    match context {
        Some(context) => context.around(parts),
        None => {
            let last = parts.len().saturating_sub(1);
            (parts, last)
        }
    }
}

/// The slot for the next step of a request resh answers in steps.
async fn step_slot(
    next: Dispatch,
    ordered: &Ordered,
    session: u64,
    next_request: &mut u64,
    in_flight: &mut usize,
    codec: &dyn Codec,
    context: Option<Context>,
) -> Result<AnswerSlot, SequencerGone> {
    Ok(match next {
        Dispatch::Reply(bytes) => AnswerSlot::Ready(bytes),
        Dispatch::Close(bytes) => AnswerSlot::Last(bytes),
        Dispatch::Ask { parts, then } => {
            let (parts, answer) = in_context(parts, context);
            let requests = submit_parts(ordered, session, next_request, parts).await?;
            *in_flight += requests.clone().count();
            let waiting = requests.start + answer as u64;
            AnswerSlot::Chained { waiting, hidden: requests, then }
        }
        Dispatch::Later { after, then } => AnswerSlot::Delayed { until: Instant::now() + after, then },
        other => {
            error!(step = ?other, "internal: a step that is neither an answer, a question nor a wait");
            AnswerSlot::Last(codec.answer_error(&AnswerError::Undecidable).unwrap_or_default())
        }
    })
}

/// Hands `parts` to the order as one submission (a unit if more than one); their request
/// numbers.
async fn submit_parts(
    ordered: &Ordered,
    session: u64,
    next_request: &mut u64,
    parts: Vec<Part>,
) -> Result<Range<u64>, SequencerGone> {
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else { return Ok(*next_request..*next_request) };
    let submission =
        Submission { session, request: *next_request, bytes: first.request, class: first.class, more: parts.collect() };
    let requests = submission.requests();
    *next_request = requests.end;
    ordered.submit(submission).await?;
    Ok(requests)
}
